"""Integrators' webhooks: subscriptions (:mod:`.subscriptions`) and the delivery of their
outbox (:mod:`.delivery`). Events are queued by :func:`herald.models.record_event` in the
transaction of the change they report."""
