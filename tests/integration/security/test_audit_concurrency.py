"""Many writers appending at once keep one valid chain, on Postgres and on SQLite."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from herald import db
from herald.migrations import runner
from herald.models import AuditEvent
from herald.security.audit import Actor, EventType, record
from herald.security.audit_verify import verify_chain

THREADS, EACH = 6, 10


def _hammer(sessions: Callable[[], Session]) -> None:
    def writer(n: int) -> int:
        written = 0
        for i in range(EACH):
            with sessions() as session, session.begin():
                event = record(
                    session, EventType.ADMIN_ACTION, actor=Actor("user", f"w{n}"), message=f"{i}"
                )
                written += event is not None
        return written

    with ThreadPoolExecutor(THREADS) as pool:
        assert sum(pool.map(writer, range(THREADS))) == THREADS * EACH


def _check(engine: Engine) -> None:
    with Session(engine) as session:
        report = verify_chain(session)
        assert report.ok, report.reason
        assert report.checked == THREADS * EACH
        sequences = session.scalars(select(AuditEvent.sequence).order_by(AuditEvent.sequence))
        assert list(sequences) == list(range(1, THREADS * EACH + 1))


def test_concurrent_writers_form_one_chain_on_postgres(committed: Engine) -> None:
    _hammer(lambda: Session(committed))
    _check(committed)


def test_concurrent_writers_form_one_chain_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'audit.sqlite3'}"
    runner.upgrade(url)
    engine = db.make_engine(url)
    try:
        _hammer(lambda: Session(engine))
        _check(engine)
    finally:
        engine.dispose()
