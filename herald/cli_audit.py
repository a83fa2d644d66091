"""``herald audit …``: verify the chain, sign a checkpoint, purge, erase a subject.

Each command opens one transaction in the service scope (every workspace). The purge must run
as the database role that owns ``audit_events`` (on Postgres only the owner can lift the
append-only trigger); everything else runs as the runtime role.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import click

from herald.settings import get_settings


@contextmanager
def service_session(reason: str) -> Iterator[Any]:
    from herald import db

    with db.session_scope() as session:
        db.service_scope(session, reason)
        yield session


def _fail(message: str, code: int = 1) -> None:
    click.echo(f"herald: {message}", err=True)
    sys.exit(code)


@click.group()
def audit() -> None:
    """The security audit log: verify, checkpoint, purge, erase."""


@audit.command("verify")
def audit_verify() -> None:
    """Check the chain against itself and the signed checkpoints; record the result.

    Exits 0 when intact, 1 naming the first broken row otherwise."""
    from herald.security.audit_verify import verify_and_record

    with service_session("cli.audit.verify") as session:
        report = verify_and_record(session, get_settings())
    if report.ok:
        click.echo(f"audit chain intact: {report.checked} rows, {report.checkpoints} checkpoints")
        return
    _fail(f"audit chain broken at row {report.first_break}: {report.reason}")


@audit.command("checkpoint")
def audit_checkpoint() -> None:
    """Sign the chain head now and write it to HERALD_AUDIT_CHECKPOINT_DIR."""
    from herald.security import checkpoints

    try:
        with service_session("cli.audit.checkpoint") as session:
            written = checkpoints.write(session, get_settings(), reason="on demand")
    except checkpoints.CheckpointError as exc:
        _fail(str(exc), 2)
        return
    click.echo(f"checkpoint {written.name}: row {written.sequence} signed by {written.key_id}")


@audit.command("keygen")
@click.option("--kid", default="a1", show_default=True, help="Key id.")
def audit_keygen(kid: str) -> None:
    """Print a new checkpoint signing key and its public key."""
    from herald.security.checkpoints import generate_signing_key

    signing, public = generate_signing_key(kid)
    click.echo(f"HERALD_AUDIT_SIGNING_KEY={signing}")
    click.echo(f"public key (for HERALD_AUDIT_VERIFY_KEYS after the next rotation): {public}")


@audit.command("purge")
@click.option(
    "--before",
    required=True,
    type=click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]),
    help="Remove rows that occurred before this UTC date or time.",
)
@click.option("--by", default="cli", show_default=True, help="Who purges (audited).")
def audit_purge(before: datetime, by: str) -> None:
    """Cut the log: sign a checkpoint at the cut, remove the rows before it, audit the purge."""
    from herald.security.audit import Actor
    from herald.security.audit_admin import PurgeRefused, purge

    try:
        with service_session("cli.audit.purge") as session:
            result = purge(session, get_settings(), before.replace(tzinfo=UTC), Actor("cli", by))
    except PurgeRefused as exc:
        _fail(f"purge refused: {exc}")
        return
    if not result.cut:
        click.echo("nothing to purge")
        return
    click.echo(f"purged rows 1-{result.cut} ({result.deleted}); checkpoint {result.checkpoint}")


@audit.command("erase")
@click.option("--subject", required=True, help="The member (actor id) whose data is erased.")
@click.option("--by", default="cli", show_default=True, help="Who erases (audited).")
def audit_erase(subject: str, by: str) -> None:
    """Erase a member's personal data (IP, user agent, names) from the audit log."""
    from herald.security.audit import Actor
    from herald.security.audit_admin import erase_subject

    with service_session("cli.audit.erase") as session:
        erased = erase_subject(session, subject, Actor("cli", by))
    click.echo(f"erased personal data of {erased} audit rows; the chain still verifies")
