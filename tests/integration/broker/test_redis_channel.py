"""Herald's Redis channel keeps one command client per connection pool (kombu built a redis-py
client, with its table of reply callbacks, for every command: every send and every ack), and
still reaches Redis through a new pool after the old one is gone."""

from __future__ import annotations

from herald.broker.redis import Channel
from tests.fixtures.brokers import Broker
from tests.fixtures.servers import RedisServer


def test_one_client_serves_every_command_until_the_pool_changes(
    private_redis: RedisServer, private_redis_broker: Broker
) -> None:
    with private_redis_broker.app.connection_for_write() as connection:
        channel = connection.default_channel
        assert isinstance(channel, Channel)  # the workers' and the dispatcher's transport
        with channel.conn_or_acquire() as first, channel.conn_or_acquire() as second:
            assert first is second
            first.lpush("herald-test-list", b"x")
        assert channel._size("herald-test-list") == 1  # kombu's own command, through it too

        private_redis.restart()  # the pool's connections are dead; the pool retries them
        with channel.conn_or_acquire() as after_restart:
            assert after_restart is first
            assert after_restart.ping()

        channel._disconnect_pools()  # as after a fork or a lost connection: a new pool
        with channel.conn_or_acquire() as renewed:
            assert renewed is not first
            assert renewed.connection_pool is channel.pool
            assert renewed.ping()

        given = object()
        with channel.conn_or_acquire(given) as passed:  # a caller's own client is used as is
            assert passed is given
