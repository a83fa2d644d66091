from __future__ import annotations

import threading

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from herald.models import IllegalTransition, Post, PostStatus, transition
from tests.fixtures.factories import make_integration, make_post, make_workspace


def test_transition_moves_only_from_the_expected_status(session: Session) -> None:
    post = make_post(session, make_integration(session, make_workspace(session)))
    assert transition(session, post.id, from_=PostStatus.SCHEDULED, to=PostStatus.QUEUED)
    assert not transition(session, post.id, from_=PostStatus.SCHEDULED, to=PostStatus.QUEUED)
    status = session.scalar(select(Post.status).where(Post.id == post.id))
    assert status is PostStatus.QUEUED


def test_transition_sets_further_columns_in_the_same_update(session: Session) -> None:
    post = make_post(session, make_integration(session, make_workspace(session)), status="queued")
    assert transition(
        session, post.id, from_=PostStatus.QUEUED, to=PostStatus.PUBLISHING, attempts=1
    )
    session.refresh(post)
    assert (post.status, post.attempts) == (PostStatus.PUBLISHING, 1)


def test_a_move_the_machine_does_not_have_is_a_programming_error(session: Session) -> None:
    post = make_post(session, make_integration(session, make_workspace(session)))
    with pytest.raises(IllegalTransition):
        transition(session, post.id, from_=PostStatus.PUBLISHED, to=PostStatus.QUEUED)


def test_idempotency_key_is_unique_per_workspace(session: Session) -> None:
    integration = make_integration(session, make_workspace(session))
    make_post(session, integration, idempotency_key="same")
    other = make_integration(session, make_workspace(session))
    make_post(session, other, idempotency_key="same")  # another workspace: fine
    with pytest.raises(IntegrityError):
        make_post(session, integration, idempotency_key="same")


def test_two_racing_workers_never_both_win(committed: Engine, service_engine: Engine) -> None:
    with Session(service_engine) as s:  # cross-workspace set-up and the workers' role
        post = make_post(s, make_integration(s, make_workspace(s)), status="queued")
        s.commit()
        post_id = post.id
    barrier = threading.Barrier(8)
    wins: list[bool] = []

    def race() -> None:
        with Session(service_engine) as s:
            barrier.wait()
            won = transition(s, post_id, from_=PostStatus.QUEUED, to=PostStatus.PUBLISHING)
            s.commit()
            wins.append(won)

    threads = [threading.Thread(target=race) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(wins) == [False] * 7 + [True]
