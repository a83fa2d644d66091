"""Exceptions described for a log line: the class and a short, redacted message.

A database error's text carries the whole SQL statement and its parameters (hundreds of bytes,
sometimes data); a driver's carries several lines of hints. Log lines and stored errors want
what went wrong in one line: ``("OperationalError", "connection failed: … Connection
refused")``.
"""

from __future__ import annotations

from herald.telemetry.logging import redact_text

MAX_MESSAGE_CHARS = 200


def describe_error(exc: BaseException) -> tuple[str, str]:
    """(class name, first line of the message, redacted, at most 200 characters).

    For a SQLAlchemy error the driver's own exception (``exc.orig``) is described, which leaves
    out the statement SQLAlchemy appends.
    """
    original = getattr(exc, "orig", None)
    source = original if isinstance(original, BaseException) else exc
    lines = [line.strip() for line in str(source).splitlines() if line.strip()]
    # Redacted before it is cut: a cut could leave half a secret too short to be recognised.
    message = redact_text(lines[0]) if lines else ""
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[: MAX_MESSAGE_CHARS - 1] + "…"
    return type(exc).__name__, message
