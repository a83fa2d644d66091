"""Through the publisher: media fetched, uploaded once and recorded (post_media_uploads), a
retry reusing the uploads, an expired upload redone, SSRF failing the post for good."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update

from herald.contracts import PostChanges
from herald.models import Post, PostMediaUpload, PostStatus, utcnow
from herald.publishing import editing
from herald.sandbox import SandboxClient
from herald.security.crypto import KeyRing
from herald.settings import Settings
from tests.fixtures.database import service_session
from tests.fixtures.media import MediaHost
from tests.fixtures.publishing import ConnectFn, fresh
from tests.integration.publishing.test_publish_outcomes import run_publish


@pytest.fixture
def settings(pub_settings: Settings, tmp_path: Path) -> Settings:
    return pub_settings.model_copy(
        update={
            "outbound_allow_hosts": ["127.0.0.1"],
            "media_cache_dir": str(tmp_path / "cache"),
            "media_upload_poll_s": 0.01,
        }
    )


def uploads_of(post: Post) -> list[PostMediaUpload]:
    with service_session() as s:
        return list(
            s.scalars(
                select(PostMediaUpload)
                .where(PostMediaUpload.post_id == post.id)
                .order_by(PostMediaUpload.item_index)
            ).all()
        )


def test_a_retry_reuses_the_recorded_uploads(
    connect: ConnectFn,
    new_post: Callable[..., Post],
    sandbox: SandboxClient,
    settings: Settings,
    keys: KeyRing,
    media_host: MediaHost,
) -> None:
    media = [
        {"url": media_host.image(tag="1"), "kind": "image", "alt_text": "one"},
        {"url": media_host.image(tag="2"), "kind": "image", "alt_text": "two"},
    ]
    post = new_post(connect("mastodon"), content="two pictures", media=media)
    sandbox.inject("mastodon", "error", status=503, path="/api/v1/statuses", times=3)
    assert run_publish(post, settings, keys).status is PostStatus.RETRYING
    recorded = uploads_of(post)
    assert [(u.network, u.item_index) for u in recorded] == [("mastodon", 0), ("mastodon", 1)]
    assert run_publish(post, settings, keys).status is PostStatus.PUBLISHED
    stored = fresh(Post, post.id)
    uploads = sandbox.uploads("mastodon")
    assert len(uploads) == 2  # uploaded once, across both attempts
    assert all(u["attached_to"] == [stored.external_id] for u in uploads)
    assert [u["alt"] for u in uploads] == ["one", "two"]


def test_an_edit_of_the_media_between_attempts_publishes_the_new_media(
    connect: ConnectFn,
    new_post: Callable[..., Post],
    sandbox: SandboxClient,
    settings: Settings,
    keys: KeyRing,
    media_host: MediaHost,
) -> None:
    """Attempt 1 uploads picture A and fails; the user replaces it with B (accepted: the post
    is retrying). Attempt 2 publishes B with its alt text, never A's upload."""
    integration = connect("mastodon")
    first = [{"url": media_host.image(tag="A"), "kind": "image", "alt_text": "old"}]
    post = new_post(integration, content="a picture", media=first)
    sandbox.inject("mastodon", "error", status=503, path="/api/v1/statuses", times=3)
    assert run_publish(post, settings, keys).status is PostStatus.RETRYING
    assert len(uploads_of(post)) == 1
    with service_session() as s:
        editing.edit_post(
            s,
            integration.workspace_id,
            post.id,
            PostChanges.model_validate(
                {"media": [{"url": media_host.image(tag="B"), "kind": "image", "alt_text": "new"}]}
            ),
            settings,
        )

    assert run_publish(post, settings, keys).status is PostStatus.PUBLISHED
    published = fresh(Post, post.id).external_id
    uploads = sandbox.uploads("mastodon")
    assert [u["alt"] for u in uploads if u["attached_to"] == [published]] == ["new"]
    assert [u.media_id for u in uploads_of(post)] == [uploads[-1]["id"]]


def test_an_expired_upload_is_uploaded_again(
    connect: ConnectFn,
    new_post: Callable[..., Post],
    sandbox: SandboxClient,
    settings: Settings,
    keys: KeyRing,
    media_host: MediaHost,
) -> None:
    post = new_post(connect("x"), content="a picture", media=[{"url": media_host.image()}])
    sandbox.inject("x", "error", status=503, path="/2/tweets", method="POST", times=1)
    assert run_publish(post, settings, keys).status is PostStatus.RETRYING
    with service_session() as s:
        s.execute(
            update(PostMediaUpload)
            .where(PostMediaUpload.post_id == post.id)
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    assert run_publish(post, settings, keys).status is PostStatus.PUBLISHED
    first, second = sandbox.uploads("x")
    assert first["attached_to"] == []
    assert second["attached_to"] == [fresh(Post, post.id).external_id]
    assert [u.media_id for u in uploads_of(post)] == [second["id"]]


def test_a_forged_request_fails_the_post_for_good(
    connect: ConnectFn,
    new_post: Callable[..., Post],
    sandbox: SandboxClient,
    settings: Settings,
    keys: KeyRing,
) -> None:
    # Every kind of forgery is refused in test_fetch.py; here, what the post records.
    url = "http://169.254.169.254/latest/meta-data/"
    post = new_post(connect("bluesky", password="pw"), content="hi", media=[{"url": url}])
    assert run_publish(post, settings, keys).status is PostStatus.FAILED
    stored = fresh(Post, post.id)
    assert stored.last_error_code == "content_invalid"
    assert "media URL refused" in stored.last_error_message
    assert sandbox.requests("bluesky") == []
