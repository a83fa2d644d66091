"""How claimed posts are put into messages (``herald.publishing.dispatch.in_messages``), and
what a ``publish_many`` message may carry (``herald.contracts.PublishPosts``)."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from herald.contracts import PUBLISH_MANY_MAX, PublishPosts
from herald.models import utcnow
from herald.publishing.dispatch import Claimed, in_messages
from herald.settings import Settings
from herald.tasks.publishing import many_budget_s, many_loss_limit, to_publish
from herald.telemetry.tracing import TraceContext

WORKSPACE = uuid.uuid4()


def claimed(provider: str, *, ahead_s: float = 0.0, workspace: uuid.UUID = WORKSPACE) -> Claimed:
    due = utcnow() + timedelta(seconds=ahead_s) if ahead_s else utcnow() - timedelta(seconds=1)
    return Claimed(uuid.uuid4(), None, workspace, None, due, provider)


def test_up_to_spread_posts_due_go_one_to_a_message() -> None:
    posts = [claimed("x") for _ in range(16)]
    assert in_messages(posts, most=10, spread=16) == [[post] for post in posts]


def test_many_due_go_several_to_a_message_in_at_least_spread_messages_of_at_most_most() -> None:
    posts = [claimed("mastodon") for _ in range(200)]
    messages = in_messages(posts, most=10, spread=16)
    assert [len(m) for m in messages] == [10] * 20
    assert [post for message in messages for post in message] == posts  # the order kept
    messages = in_messages(posts[:40], most=10, spread=16)
    assert [len(m) for m in messages] == [2] * 20  # 40 // 16: every process gets a share


def test_one_networks_posts_to_a_message_each_where_its_first_post_stood() -> None:
    posts = [claimed(network) for _ in range(12) for network in ("x", "bluesky", "x")]
    messages = in_messages(posts, most=4, spread=4)
    assert all(len({post.provider for post in message}) == 1 for message in messages)
    assert sorted(post.post_id for m in messages for post in m) == sorted(p.post_id for p in posts)
    firsts = [posts.index(message[0]) for message in messages]
    assert firsts == sorted(firsts)


def test_posts_claimed_ahead_of_their_time_always_go_alone() -> None:
    later = [claimed("x", ahead_s=2) for _ in range(5)]
    now = [claimed("x") for _ in range(40)]
    messages = in_messages(later + now, most=10, spread=4)
    assert messages[:5] == [[post] for post in later]
    assert [len(m) for m in messages[5:]] == [10] * 4


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    networks=st.lists(st.sampled_from(["x", "bluesky", "discord"]), max_size=120),
    ahead=st.lists(st.booleans(), max_size=120),
    most=st.integers(1, PUBLISH_MANY_MAX),
    spread=st.integers(1, 40),
)
def test_every_post_is_in_exactly_one_message_within_the_bounds(
    networks: list[str], ahead: list[bool], most: int, spread: int
) -> None:
    posts = [
        claimed(network, ahead_s=5 if later else 0)
        for network, later in zip(networks, ahead + [False] * len(networks), strict=False)
    ]
    messages = in_messages(posts, most=most, spread=spread)
    carried = [post.post_id for message in messages for post in message]
    assert sorted(carried) == sorted(post.post_id for post in posts)
    assert all(1 <= len(message) <= most for message in messages)
    for message in messages:
        if len(message) > 1:
            assert len({post.provider for post in message}) == 1
            assert all(post.countdown() == 0 for post in message)


def test_a_message_carries_each_post_once_between_one_and_the_bound() -> None:
    one = {"post_id": str(uuid.uuid4())}
    assert len(PublishPosts.model_validate({"posts": [one]}).posts) == 1
    for posts, problem in [
        ([], "at least 1"),
        ([one, one], "each post may appear once"),
        ([{"post_id": str(uuid.uuid4())} for _ in range(PUBLISH_MANY_MAX + 1)], "at most 50"),
        ([{**one, "traceparent": "00-abc-def-01"}], "traceparent"),
        ([{**one, "correlation_id": "a b"}], "correlation_id"),
        ([{**one, "tracestate": "x" * 513}], "tracestate"),
        ([{**one, "workspace_id": "acme"}], "workspace_id"),
        ([{**one, "priority": 1}], "priority"),
    ]:
        with pytest.raises(ValidationError, match=problem):
            PublishPosts.model_validate({"posts": posts})


def test_a_stored_trace_the_contract_refuses_is_left_out_and_the_post_still_sent() -> None:
    post = Claimed(uuid.uuid4(), "not an id!", WORKSPACE, TraceContext("junk", None), None, "x")
    entry = to_publish(post)
    assert (entry.post_id, entry.workspace_id) == (post.post_id, WORKSPACE)
    assert (entry.correlation_id, entry.traceparent) == (None, None)
    good = TraceContext(f"00-{'a' * 32}-{'b' * 16}-01", "vendor=1")
    entry = to_publish(Claimed(uuid.uuid4(), "req-1", WORKSPACE, good, None, "x"))
    assert (entry.correlation_id, entry.traceparent, entry.tracestate) == (
        "req-1",
        good.traceparent,
        "vendor=1",
    )


def test_a_run_starts_posts_for_one_calls_time_leaving_each_most_of_its_soft_time_limit() -> None:
    base = Settings()
    one_call = base.provider_connect_timeout_s + base.provider_timeout_s
    assert many_budget_s(base) == one_call  # 20 s of 120: each post started has 100 s or more
    assert many_budget_s(base, soft_limit_s=30) == 30 - one_call - 5  # tightened from Flower
    tight = base.model_copy(update={"task_soft_time_limit_s": int(one_call) + 1})
    assert many_budget_s(tight) == 0


def test_a_message_of_several_posts_may_lose_a_process_per_post_before_it_is_poison() -> None:
    redis = Settings(broker_url="redis://127.0.0.1:6379/0", task_max_process_losses=3)
    ten = {"posts": [{"post_id": str(uuid.uuid4())} for _ in range(10)]}
    assert many_loss_limit(redis, ten) == 3 + 9
    fifty = {"posts": [{"post_id": str(uuid.uuid4())} for _ in range(50)]}
    assert many_loss_limit(redis, fifty) == 3 + 9  # no more than the dispatcher's messages get
    assert many_loss_limit(redis, {"posts": ten["posts"][:1]}) == 3
    assert many_loss_limit(redis, {"posts": "junk"}) == 3
    assert many_loss_limit(redis, None) == 3
    # A quorum queue drops a message after its delivery limit, unrecorded: the worker ends it
    # first.
    quorum = Settings(
        broker_url="amqp://guest:guest@127.0.0.1:5672//",
        broker_queue_type="quorum",
        broker_delivery_limit=10,
        task_max_process_losses=3,
    )
    assert many_loss_limit(quorum, ten) == 9
    classic = quorum.model_copy(update={"broker_queue_type": "classic"})
    assert many_loss_limit(classic, ten) == 12
