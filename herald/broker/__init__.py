"""The broker side of Herald: what a worker consumes and how it refuses what it cannot run.

- :mod:`~herald.broker.topology`: queues, exchanges, routing keys and the broker-specific
  Celery settings (Redis or RabbitMQ);
- :mod:`~herald.broker.inspection`: reads a consumed message and names what is wrong with it;
- :mod:`~herald.broker.consumer`: the worker's consumer, which refuses such messages before
  Celery's strategy sees them;
- :mod:`~herald.broker.redis`: the Redis transport, guarded where it parses a list item;
- :mod:`~herald.broker.dead_letters`: the one way a refused message or payload is recorded.
"""
