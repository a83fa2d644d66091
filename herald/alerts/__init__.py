"""Alerts: rules over the figure catalogue, their lifecycle, and notifications.

Evaluation decides states (:mod:`herald.alerts.engine`, :mod:`herald.alerts.lifecycle`); the
notification pipeline decides deliveries (:mod:`herald.alerts.notify`: suppress, group,
send, record). Other packages never import this one: they record what they know (attempts,
heartbeats, the audit verifier's result, counters) and rules read it through
:mod:`herald.telemetry.figures`.
"""
