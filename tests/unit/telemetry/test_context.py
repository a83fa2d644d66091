"""The correlation context a block acting for another flow runs under, and what it leaves."""

from __future__ import annotations

import structlog

from herald.telemetry import context


def test_acting_for_sets_then_restores_the_context_and_the_log_fields() -> None:
    with context.correlated("corr-outer", workspace_id=None):
        structlog.contextvars.bind_contextvars(extra="kept")
        with context.acting_for("corr-inner", "ws-inner"):
            assert context.current().correlation_id == "corr-inner"
            assert context.current().workspace_id == "ws-inner"
            fields = structlog.contextvars.get_contextvars()
            assert (fields["correlation_id"], fields["workspace_id"]) == ("corr-inner", "ws-inner")
            assert fields["extra"] == "kept"
        assert context.current().correlation_id == "corr-outer"
        assert context.current().workspace_id is None
        fields = structlog.contextvars.get_contextvars()
        assert fields["correlation_id"] == "corr-outer"
        assert "workspace_id" not in fields
        assert fields["extra"] == "kept"
        with context.acting_for(None, None):  # nothing to act for: the context unchanged
            assert context.current().correlation_id == "corr-outer"
    assert structlog.contextvars.get_contextvars() == {}


def test_acting_for_restores_the_context_when_the_block_raises() -> None:
    with context.correlated("corr-outer", workspace_id="ws-outer"):
        try:
            with context.acting_for("corr-inner", "ws-inner"):
                raise ValueError("the post failed")
        except ValueError:
            pass
        fields = structlog.contextvars.get_contextvars()
        assert (fields["correlation_id"], fields["workspace_id"]) == ("corr-outer", "ws-outer")
        assert context.current().workspace_id == "ws-outer"
