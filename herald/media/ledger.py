"""The database's upload ledger: what was uploaded for a post, so it is uploaded once.

Each upload is recorded, committed at once on a session of its own, as soon as the network
answers with its id: a worker killed after that reuses it on the next attempt. A record
that cannot be written (the database away for a moment) costs only a second upload later,
never the publish, so the write's failure is logged and swallowed.
"""

from __future__ import annotations

import uuid

import structlog
from sqlalchemy import delete, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from herald import db
from herald.models import PostMediaUpload, utcnow
from herald.providers.base import Upload

log = structlog.get_logger("herald.media")


class DatabaseLedger:
    def __init__(self, *, workspace_id: uuid.UUID, post_id: uuid.UUID) -> None:
        self._workspace_id = workspace_id
        self._post_id = post_id

    def _session(self) -> Session:
        """A session of its own, in the post's workspace (row-level security applies)."""
        session = db.new_session()
        db.tenant_scope(session, self._workspace_id)
        return session

    def reuse(self, network: str, index: int) -> Upload | None:
        try:
            with self._session() as session:
                row = session.scalars(
                    select(PostMediaUpload).where(
                        PostMediaUpload.post_id == self._post_id,
                        PostMediaUpload.network == network,
                        PostMediaUpload.item_index == index,
                    )
                ).first()
        except SQLAlchemyError as exc:
            log.warning("media.ledger_unreadable", post_id=str(self._post_id), error=str(exc))
            return None
        if row is None or (row.expires_at is not None and row.expires_at <= utcnow()):
            return None
        return Upload(row.media_id, row.expires_at)

    def record(self, network: str, index: int, upload: Upload) -> None:
        try:
            with self._session() as session, session.begin():
                session.execute(
                    delete(PostMediaUpload).where(
                        PostMediaUpload.post_id == self._post_id,
                        PostMediaUpload.network == network,
                        PostMediaUpload.item_index == index,
                    )
                )
                session.add(
                    PostMediaUpload(
                        workspace_id=self._workspace_id,
                        post_id=self._post_id,
                        network=network,
                        item_index=index,
                        media_id=upload.media_id,
                        expires_at=upload.expires_at,
                    )
                )
        except SQLAlchemyError as exc:
            log.warning("media.ledger_unwritable", post_id=str(self._post_id), error=str(exc))
