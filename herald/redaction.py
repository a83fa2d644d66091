"""What counts as a secret, and how it is taken out: the one set of rules for logs, spans and
stored error messages.

Three shapes are handled:

- **structured values** (log fields, span attributes, JSON columns): a key that names a secret
  (``access_token``, ``client_secret``, ``authorization``, anything ending ``_token``...) has
  its value replaced whatever it is; every other string is treated as free text;
- **free text** (messages, a network's error body quoted in an error, a library's log line,
  a traceback): bearer/basic credentials, ``Authorization:``/``Cookie:`` headers,
  ``key=value`` and ``"key": "value"`` pairs whose key names a secret, passwords in URLs, and
  secrets that live in URL paths (Telegram's ``/bot<token>/``, a Discord webhook's
  ``/webhooks/<id>/<token>``);
- **URLs** for spans: the path's secrets removed, the query and fragment dropped.

Cost: free text is lower-cased once and checked for a handful of trigger words (``token``,
``bearer``, ``/bot``, ``://``...) with plain substring scans; only the patterns whose words
appear run. Ids, status words and most messages contain none, so the common case costs well
under a microsecond, and a text already seen clean (a repeated SQL statement, a task name)
costs one dictionary lookup.

This module sits at the bottom of the layers (it imports nothing of Herald's), so the models'
column types, telemetry, providers and tasks can all use it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit, urlunsplit

REDACTED = "[REDACTED]"

# A field, query parameter or JSON key of one of these names (compared lower-case) holds a
# secret, and so does any name ending in one of the endings: ``th_refresh_token``,
# ``client_secret``, ``refreshJwt``, ``x-api-key``. ``error_code`` and ``token_version`` are
# not secrets: a name must *end* in the word, and ``code`` counts only on its own.
_SECRET_NAMES = frozenset(
    {
        "code",
        "code_verifier",
        "routing_key",  # PagerDuty's Events API key (an AMQP routing key is only ever named so)
        "sig",
        "authorization",
        "proxy-authorization",
        "cookie",
        "set-cookie",
    }
)
_SECRET_ENDINGS = (
    "token",
    "secret",
    "password",
    "passwd",
    "jwt",
    "apikey",
    "api_key",
    "api-key",
    "private_key",
    "private-key",
    "secret_key",
    "access_key",
    "signing_key",
    "key_material",
    "ciphertext",
    "signature",
    "credential",
    "credentials",
)

_NOT_REDACTED = r"(?!\[REDACTED\])"
_PATH_SEGMENT = r"[^/\s?#\"'<>]"


@lru_cache(maxsize=2048)  # field names repeat (log keys, span attribute keys)
def is_secret_key(key: str) -> bool:
    """Whether a field of this name holds a secret (its value is replaced whatever it is)."""
    lowered = key.lower()
    return lowered in _SECRET_NAMES or lowered.endswith(_SECRET_ENDINGS)


@dataclass(frozen=True, slots=True)
class _Rule:
    """A pattern, run only when the lower-cased text contains one of ``words`` and the text
    contains each of ``chars``: those checks are plain substring scans, far cheaper than the
    pattern, and most text fails them."""

    pattern: re.Pattern[str]
    replacement: str | Callable[[re.Match[str]], str]
    words: tuple[str, ...]
    chars: tuple[str, ...] = ()


_NAME_WORDS = (
    "token",
    "secret",
    "passw",
    "jwt",
    "key",
    "cipher",
    "signature",
    "credential",
    "code",
    "sig",
    "authoriz",
    "cookie",
)
_RULES = (
    # Authorization: Bearer …, Basic …, Digest …; Discord's "Bot <token>".
    _Rule(
        re.compile(rf"(?i)\b(bearer|basic|digest)\s+{_NOT_REDACTED}[A-Za-z0-9._~+/=:-]{{8,}}"),
        r"\1 " + REDACTED,
        ("bearer", "basic", "digest"),
    ),
    _Rule(
        re.compile(rf"\b(Bot)\s+{_NOT_REDACTED}[A-Za-z0-9._-]{{20,}}"), r"\1 " + REDACTED, ("bot",)
    ),
    # A header written out: "Authorization: <scheme> xyz", "X-Api-Key: xyz" (the credential
    # only), "Cookie: a=b; c=d" (the rest of the line).
    _Rule(
        re.compile(
            r"(?i)(?<![\w-])(authorization|proxy-authorization|x-api-key)"
            rf"(\s*+:\s*+){_NOT_REDACTED}(?:[A-Za-z]+\s+)?[^\s\"',;]+"
        ),
        r"\1\2" + REDACTED,
        ("authoriz", "x-api-key"),
        (":",),
    ),
    _Rule(
        re.compile(rf"(?i)(?<![\w-])(cookie|set-cookie)(\s*+:\s*+){_NOT_REDACTED}[^\r\n\"']+"),
        r"\1\2" + REDACTED,
        ("cookie",),
        (":",),
    ),
    # key=value in a query string, a form body or logfmt; "key": "value" in JSON, 'key':
    # 'value' in a repr, ('key', 'value') in a list of pairs. The name is matched broadly and
    # judged by :func:`is_secret_key`; a SQL placeholder (``%(name)s``, ``?``, ``:name``) is
    # not a value.
    _Rule(
        re.compile(rf"(?<![\w.-])([\w.-]+)=(?!%\(|\?|:\w){_NOT_REDACTED}([^&\s\"',;<>)\]}}]+)"),
        lambda m: f"{m[1]}={REDACTED}" if is_secret_key(m[1]) else m[0],
        _NAME_WORDS,
        ("=",),
    ),
    # (A quote may be escaped, by up to three backslashes: a JSON body quoted inside a JSON
    # string, once or twice. The count is bounded and a match starts at a run's first
    # backslash, so a long run of them costs linear time, not quadratic.)
    _Rule(
        re.compile(r"(?<!\\)(\\{0,3}[\"'])([\w.-]+)\1(\s*[:,]\s*b?(\\{0,3}[\"']))[^\"']*?\4"),
        lambda m: f"{m[1]}{m[2]}{m[1]}{m[3]}{REDACTED}{m[4]}" if is_secret_key(m[2]) else m[0],
        _NAME_WORDS,
    ),
    # A password in a URL: scheme://user:password@host, or scheme://:password@host (Redis).
    _Rule(
        re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://[^/\s:@]*:)[^/\s@]+@"),
        r"\1" + REDACTED + "@",
        ("://",),
        ("@",),
    ),
    # Secrets in URL paths: Telegram's /bot<token>/ (a token has a digit, ':', '-' or '_'),
    # a Discord (or any) webhook's /webhooks/<id>/<token>.
    _Rule(
        re.compile(rf"(/bot)(?={_PATH_SEGMENT}*[\d:_-]){_NOT_REDACTED}{_PATH_SEGMENT}{{8,}}"),
        r"\1" + REDACTED,
        ("/bot",),
    ),
    _Rule(
        re.compile(rf"(/webhooks/{_PATH_SEGMENT}+/){_NOT_REDACTED}{_PATH_SEGMENT}+"),
        r"\1" + REDACTED,
        ("/webhooks/",),
    ),
)
# Every rule's words, in one tuple, without those that contain another ("/bot" has "bot"):
# text with none of them is returned untouched at once.
_WORDS = {word for rule in _RULES for word in rule.words}
_ANY_WORD = tuple(sorted(w for w in _WORDS if not any(o != w and o in w for o in _WORDS)))


class CleanMemo(dict[Any, Any]):
    """Values found to hold no secret, remembered so a value that repeats is checked once per
    process (a dict, so ``value in memo`` is a dict lookup), each with what was worked out for
    it if anything (the OTLP encoder keeps its encoding). Only what was found clean is
    remembered. Bounded: at most ``entries`` values of at most ``max_chars`` characters each
    (a longer one is not remembered) and ``total_chars`` in all; emptied when full."""

    def __init__(self, entries: int, max_chars: int, total_chars: int) -> None:
        super().__init__()
        self.entries, self.max_chars, self.total_chars = entries, max_chars, total_chars
        self.chars = 0

    def remember(self, value: Any, chars: int, worked_out: Any = None) -> None:
        """Remember ``value``, found clean, of ``chars`` characters (with ``worked_out``)."""
        if chars > self.max_chars:
            return
        if len(self) >= self.entries or self.chars + chars > self.total_chars:
            self.clear()
            self.chars = 0
        self[value] = worked_out
        self.chars += chars


# Text found to hold no secret (a task name, a status, a SQL statement naming
# ``token_version``): most log fields and span attributes repeat. At most 2,048 texts of at
# most 16,384 characters each (the publish path's claim statement is about 4,700) and 1 M
# characters in all.
_CLEAN_MAX_ENTRIES = 2048
_CLEAN_MAX_CHARS = 16_384
_CLEAN_MAX_TOTAL = 1_000_000
_CLEAN = CleanMemo(_CLEAN_MAX_ENTRIES, _CLEAN_MAX_CHARS, _CLEAN_MAX_TOTAL)


def redact_text(text: str) -> str:
    """``text`` with every secret it visibly carries replaced by ``[REDACTED]``."""
    if text in _CLEAN:
        return text
    lowered = text.lower()
    for word in _ANY_WORD:
        if word in lowered:
            break
    else:
        _CLEAN.remember(text, len(text))
        return text
    redacted = text
    for rule in _RULES:
        if any(word in lowered for word in rule.words) and all(c in text for c in rule.chars):
            redacted = rule.pattern.sub(rule.replacement, redacted)
    if redacted == text:
        _CLEAN.remember(text, len(text))
    return redacted


TOO_DEEP = "[nested too deep]"


def redact_value(value: Any, depth: int = 0) -> Any:
    """Redact secrets inside any JSON-like value (mappings by key, strings as free text). A
    mapping or list nested deeper than 8 levels is replaced whole: nothing past the bound is
    checked, so nothing past it is kept."""
    if isinstance(value, str):
        return redact_text(value)
    if depth > 8 and isinstance(value, Mapping | list | tuple):
        return TOO_DEEP
    if isinstance(value, Mapping):
        return {
            k: (REDACTED if isinstance(k, str) and is_secret_key(k) else redact_value(v, depth + 1))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact_value(v, depth + 1) for v in value]
    return value


def redact_url(url: str) -> str:
    """A URL fit for a span or a log line: path secrets and any password removed, the query
    and fragment dropped (a query may carry a token under any name)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact_text(url.split("?", 1)[0])
    netloc = parts.netloc
    if "@" in netloc:
        netloc = netloc.rsplit("@", 1)[1]
    return urlunsplit((parts.scheme, netloc, redact_text(parts.path), "", ""))
