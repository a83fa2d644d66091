"""The one redaction (herald/redaction.py): every shape a secret travels in, and what stays."""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from herald import redaction
from herald.redaction import REDACTED, is_secret_key, redact_text, redact_url, redact_value

# Where a token shows up in text Herald logs, exports or stores, with {t} for the token.
SHAPES = [
    # httpx's "HTTP Request:" line, at INFO and DEBUG alike
    'HTTP Request: POST http://127.0.0.1:8765/telegram/bot{t}/sendMessage "HTTP/1.1 200 OK"',
    "GET /file/bot123456:{t}/photos/file_1.jpg",
    'HTTP Request: POST https://discord.com/api/webhooks/1234567890/{t}?wait=true "HTTP/1.1 204"',
    "GET https://graph.threads.net/v1.0/me/threads?fields=id,text&access_token={t}&limit=25",
    "GET /refresh_access_token?grant_type=th_refresh_token&access_token={t}",
    "grant_type=refresh_token&refresh_token={t}&client_id=abc",
    "fb_exchange_token={t}",
    "Authorization: Bearer {t}",
    "authorization: Basic {t}",
    "Authorization: {t}",
    "Authorization: Bot {t}",
    "X-Api-Key: {t}",
    "Cookie: session={t}; theme=dark",
    '{{"error": "invalid_grant", "refresh_token": "{t}"}}',
    "{{'access_token': '{t}', 'token_type': 'bearer'}}",
    "[(b'authorization', b'Bearer {t}'), (b'host', b'x.com')]",
    "could not connect to postgresql://herald:{t}@db:5432/herald",
    "invalid token: got Bearer {t} on /2/tweets",
    'the answer was {{"accessJwt": "{t}", "did": "did:plc:abc"}}',
    # a URL whose user name is empty (Redis: redis://:password@host)
    "redis://:{t}@cache:6379/0",
    # PagerDuty's Events API key, in a body or a message another service sent
    '{{"routing_key": "{t}", "event_action": "trigger"}}',
    # a JSON body quoted inside a JSON string (a raw message stored whole)
    '"{{\\"password\\": \\"{t}\\", \\"user\\": \\"a\\"}}"',
]

tokens = st.text(
    alphabet=st.characters(codec="ascii", categories=["Lu", "Ll", "Nd"]) | st.sampled_from("-_"),
    min_size=24,
    max_size=48,
).map(lambda s: "Zq9" + s)  # never all-punctuation, never a word


@pytest.mark.parametrize("shape", SHAPES)
@given(token=tokens)
def test_a_token_in_any_shape_never_survives(shape: str, token: str) -> None:
    out = redact_text(shape.format(t=token))
    assert token not in out
    assert REDACTED in out


@given(text=st.text(max_size=200))
def test_redaction_is_idempotent(text: str) -> None:
    once = redact_text(text)
    assert redact_text(once) == once


@pytest.mark.parametrize(
    "text",
    [
        "publish.attempt",
        "error_code=rate_limited token_version=3 idempotency_key=campaign-7 status=429",
        "Forbidden: bot was blocked by the user",
        "mastodon: Validation failed: Text character limit of 500 exceeded (HTTP 422)",
        "UPDATE integrations SET access_token_ciphertext=%(access_token_ciphertext)s "
        "WHERE integrations.token_version = %(token_version_1)s",
        "SELECT * FROM posts WHERE token_version = ? AND secret_ref = :secret_ref",
        "GET /2/tweets?ids=1,2&tweet.fields=public_metrics",
        '{"token_type": "bearer", "expires_in": 7200}',
    ],
)
def test_text_without_a_secret_is_left_alone(text: str) -> None:
    assert redact_text(text) == text


def test_structured_values_are_redacted_by_key_and_strings_as_text() -> None:
    event = {
        "access_token": "at-123",
        "nested": {"th_refresh_token": "rt-456", "list": [{"client_secret": "cs"}], "ok": "keep"},
        "headers": {"Authorization": "anything", "X-Api-Key": "k"},
        "note": "Bearer abcdefgh12345678",
        "error_code": "rate_limited",
        "token_version": 3,
    }
    out = redact_value(event)
    assert out["access_token"] == REDACTED
    assert out["nested"]["th_refresh_token"] == REDACTED
    assert out["nested"]["list"][0]["client_secret"] == REDACTED
    assert out["headers"] == {"Authorization": REDACTED, "X-Api-Key": REDACTED}
    assert out["nested"]["ok"] == "keep"
    assert out["note"] == f"Bearer {REDACTED}"
    assert out["error_code"] == "rate_limited"
    assert out["token_version"] == 3


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("access_token", True),
        ("refreshJwt", True),
        ("x-api-key", True),
        ("client_secret", True),
        ("code", True),
        ("error_code", False),
        ("token_version", False),
        ("token_type", False),
        ("idempotency_key", False),
    ],
)
def test_secret_names_end_in_a_secret_word(name: str, secret: bool) -> None:
    assert is_secret_key(name) is secret


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "http://127.0.0.1:8765/telegram/bot123:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw/sendMessage",
            f"http://127.0.0.1:8765/telegram/bot{REDACTED}/sendMessage",
        ),
        (
            "https://discord.com/api/webhooks/42/tok-en_value?wait=true",
            f"https://discord.com/api/webhooks/42/{REDACTED}",
        ),
        (
            "https://graph.threads.net/v1.0/me/threads?fields=id&custom=THQ123#access_token=x",
            "https://graph.threads.net/v1.0/me/threads",
        ),
        ("https://user:pw@example.com/a/b", "https://example.com/a/b"),
    ],
)
def test_urls_lose_path_secrets_credentials_and_the_query(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_long_clean_statements_are_checked_once_and_the_memory_of_them_is_bounded() -> None:
    # The publish path's claim names token columns and runs to about 4,700 characters: it is
    # checked once per process, not on every span.
    statement = "SELECT integrations.access_token_ciphertext, " + "posts.content, " * 320
    assert 4_700 < len(statement) <= redaction._CLEAN_MAX_CHARS
    assert redact_text(statement) == statement
    assert statement in redaction._CLEAN
    # Text that held a secret is never remembered.
    secret = statement + " access_token=abc123secret"
    assert "abc123secret" not in redact_text(secret)
    assert secret not in redaction._CLEAN
    # However many distinct clean texts pass, the remembered ones stay within the budget.
    for n in range(400):
        redact_text(f"/* {n} */ " + "x" * 9_000)
        assert sum(map(len, redaction._CLEAN)) <= redaction._CLEAN_MAX_TOTAL


def test_a_secret_nested_deeper_than_the_walk_goes_never_survives() -> None:
    """Past its depth bound the walk returned the rest untouched, secrets and all."""
    value: object = {"access_token": "Zq9deepsecretvalue0123456789", "note": "Bearer Zq9abcdefgh12"}
    for _ in range(12):
        value = {"level": [value]}
    out = repr(redact_value(value))
    assert "Zq9deepsecretvalue" not in out
    assert "Zq9abcdefgh12" not in out
    assert redact_value({"a": {"b": "Bearer Zq9abcdefgh12"}}) == {"a": {"b": f"Bearer {REDACTED}"}}


def test_a_long_run_of_backslashes_is_redacted_in_linear_time() -> None:
    """The escaped-quote pair rule backtracked over every run of backslashes: 40,000 of them
    in a network's error text (which is redacted whole) took 14 s of a publish worker."""
    text = '"key": x' + "\\" * 30_000 + "y"
    started = time.perf_counter()
    assert redact_text(text) == text
    assert time.perf_counter() - started < 2.0  # quadratic: about 7 s
