"""Editing and rescheduling a post through the API: conditional on its ETag, validated as when
scheduling, and refused once the dispatcher claimed it."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from herald.models import Post, PostMediaUpload, PostStatus, utcnow
from tests.fixtures.database import service_session
from tests.fixtures.publishing import fresh
from tests.integration.api.conftest import Tenant, assert_error, query


def _patch(
    client: TestClient, tenant: Tenant, post: Post, body: dict[str, object], etag: str
) -> Any:
    return client.patch(
        f"/api/postiz/posts/{post.id}", json=body, headers={**tenant.headers, "If-Match": etag}
    )


def test_an_edit_with_the_etag_changes_the_post_and_moves_its_version(
    client: TestClient, tenant: Tenant
) -> None:
    post = tenant.post(content="old words")
    etag = client.get(f"/api/postiz/posts/{post.id}", headers=tenant.headers).headers["ETag"]
    later = (utcnow() + timedelta(hours=2)).replace(microsecond=0)

    response = _patch(
        client,
        tenant,
        post,
        {"content": "new words", "scheduled_at": later.isoformat(), "provider_settings": {"a": 1}},
        etag,
    )

    assert response.status_code == 200, response.text
    assert (response.json()["content"], response.json()["version"]) == ("new words", 2)
    assert response.headers["ETag"] == '"2"'
    stored = fresh(Post, post.id)
    assert (stored.content, stored.scheduled_at, stored.version) == ("new words", later, 2)
    # The old ETag is spent: a second editor working from it is told to read again.
    stale = _patch(client, tenant, post, {"content": "lost update"}, etag)
    assert assert_error(stale, 412, "version_mismatch")["details"] == {"current_version": 2}


def test_an_edit_needs_if_match_and_is_validated_as_scheduling(
    client: TestClient, tenant: Tenant
) -> None:
    post = tenant.post(content="short")
    missing = client.patch(
        f"/api/postiz/posts/{post.id}", json={"content": "x"}, headers=tenant.headers
    )
    assert_error(missing, 428, "precondition_required")
    assert_error(_patch(client, tenant, post, {}, '"1"'), 422, "nothing_to_change")
    too_long = _patch(client, tenant, post, {"content": "é" * 301}, '"1"')  # Bluesky: 300
    assert_error(too_long, 422, "content_invalid")
    past = (utcnow() - timedelta(days=30)).isoformat()
    assert_error(
        _patch(client, tenant, post, {"scheduled_at": past}, '"1"'),
        422,
        "scheduled_at_out_of_range",
    )
    assert (fresh(Post, post.id).content, fresh(Post, post.id).version) == ("short", 1)


@pytest.mark.parametrize(
    "status",
    [PostStatus.QUEUED, PostStatus.PUBLISHING, PostStatus.PUBLISHED, PostStatus.CANCELLED],
)
def test_a_post_claimed_for_publishing_or_finished_is_not_edited(
    client: TestClient, tenant: Tenant, status: PostStatus
) -> None:
    post = tenant.post(status=status, content="as claimed")

    response = _patch(client, tenant, post, {"content": "too late"}, '"1"')

    assert assert_error(response, 409, "post_not_editable")["details"] == {"status": status.value}
    assert query(select(Post.content).where(Post.id == post.id)) == ["as claimed"]


def test_another_workspaces_post_is_not_found(
    client: TestClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    post = other_tenant.post()
    assert_error(
        _patch(client, tenant, post, {"content": "mine now"}, '"1"'), 404, "post_not_found"
    )


def test_an_edit_of_the_media_forgets_what_earlier_attempts_uploaded(
    client: TestClient, tenant: Tenant
) -> None:
    """Through the API (the runtime role, the workspace's row-level security): the uploads
    an earlier attempt recorded are of the old media and go with the edit."""
    post = tenant.post(content="a picture", status=PostStatus.RETRYING)
    with service_session() as s:
        s.add(
            PostMediaUpload(
                workspace_id=post.workspace_id,
                post_id=post.id,
                network="bluesky",
                item_index=0,
                media_id="blob-of-the-old-picture",
            )
        )
    etag = client.get(f"/api/postiz/posts/{post.id}", headers=tenant.headers).headers["ETag"]
    media = [{"url": "https://cdn.example.com/new.png", "kind": "image", "alt_text": "new"}]

    response = _patch(client, tenant, post, {"media": media}, etag)

    assert response.status_code == 200, response.text
    with service_session() as s:
        left = s.scalars(select(PostMediaUpload).where(PostMediaUpload.post_id == post.id))
        assert list(left) == []
