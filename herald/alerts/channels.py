"""The last stage of the pipeline: render a delivery for one kind of receiver and send it.

A :class:`Delivery` is the alerts of one group that go to one receiver together. Channels:

- ``webhook``: JSON, signed (:mod:`herald.security.signing`);
- ``slack``: a Slack-compatible incoming webhook (``text`` in mrkdwn);
- ``email``: one plain-text message over SMTP (settings ``HERALD_SMTP_*``);
- ``pagerduty``: Events API v2, one event per alert (trigger / acknowledge / resolve) with the
  alert's fingerprint as ``dedup_key``;
- ``alertmanager``: ``POST /api/v2/alerts`` of an Alertmanager.

Every HTTP call goes through :mod:`herald.security.outbound`. A failure is a
:class:`DeliveryFailed` whose message is safe to store: a status or an exception class, never
a URL (webhook URLs carry secrets), a header or a body.
"""

from __future__ import annotations

import contextlib
import json
import smtplib
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any, Protocol

import httpx

from herald.security import signing
from herald.security.outbound import DestinationRefused
from herald.settings import AlertReceiver, Settings


class DeliveryFailed(Exception):
    def __init__(self, reason: str, *, retryable: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable


@dataclass(frozen=True, slots=True)
class Delivery:
    id: str
    receiver: str
    group_key: str
    items: list[dict[str, Any]]  # the alerts' snapshots (outbox payloads)

    @property
    def status(self) -> str:
        firing = any(item["status"] != "resolved" for item in self.items)
        return "firing" if firing else "resolved"


class Channel(Protocol):
    per_alert: bool

    def send(self, delivery: Delivery) -> None: ...


def _post(http: httpx.Client, url: str, body: bytes, headers: dict[str, str]) -> None:
    try:
        # Only the status counts: the receiver's body is never read (it could be endless).
        with http.stream(
            "POST", url, content=body, headers={"Content-Type": "application/json", **headers}
        ) as response:
            status = response.status_code
    except DestinationRefused as exc:
        raise DeliveryFailed(exc.reason, retryable=False) from None
    except httpx.TransportError as exc:
        raise DeliveryFailed(f"transport error: {type(exc).__name__}", retryable=True) from None
    except httpx.TooManyRedirects:
        raise DeliveryFailed("too many redirects", retryable=False) from None
    if 200 <= status < 300:
        return
    retryable = status in (408, 425, 429) or status >= 500
    raise DeliveryFailed(f"receiver answered HTTP {status}", retryable=retryable)


def alertmanager_api(base: str) -> str:
    """The alerts endpoint under an Alertmanager's base URL, its query (a token) kept."""
    url = httpx.URL(base)
    return str(url.copy_with(path=url.path.rstrip("/") + "/api/v2/alerts"))


def _dump(body: Any) -> bytes:
    return json.dumps(body, separators=(",", ":"), default=str).encode()


def _secret(value: Any) -> str:
    assert value is not None, "validated by AlertReceiver"
    return str(value.get_secret_value())


def _line(item: dict[str, Any]) -> str:
    value = item.get("value")
    shown = f" (value {value:.4g})" if isinstance(value, int | float) else ""
    return f"[{item['status'].upper()}] {item['rule']} · {item['severity']}{shown}: " + (
        item["annotations"].get("summary") or ""
    )


def title(delivery: Delivery) -> str:
    rules = sorted({item["rule"] for item in delivery.items})
    return f"[{delivery.status.upper()}:{len(delivery.items)}] {', '.join(rules)}"


@dataclass
class Webhook:
    config: AlertReceiver
    http: httpx.Client
    per_alert: bool = False

    def send(self, delivery: Delivery) -> None:
        body = _dump(
            {
                "version": "1",
                "delivery_id": delivery.id,
                "receiver": delivery.receiver,
                "group_key": delivery.group_key,
                "status": delivery.status,
                "alerts": delivery.items,
            }
        )
        headers = signing.sign(_secret(self.config.secret), delivery.id, body)
        _post(self.http, _secret(self.config.url), body, headers)


@dataclass
class Slack:
    config: AlertReceiver
    http: httpx.Client
    per_alert: bool = False

    def send(self, delivery: Delivery) -> None:
        text = "\n".join([f"*{title(delivery)}*", *(_line(i) for i in delivery.items)])
        _post(self.http, _secret(self.config.url), _dump({"text": text}), {})


@dataclass
class PagerDuty:
    config: AlertReceiver
    http: httpx.Client
    events_url: str
    per_alert: bool = True

    ACTIONS = {"acknowledged": "acknowledge", "resolved": "resolve"}  # noqa: RUF012

    def send(self, delivery: Delivery) -> None:
        for item in delivery.items:
            action = self.ACTIONS.get(item["status"], "trigger")
            event: dict[str, Any] = {
                "routing_key": _secret(self.config.routing_key),
                "event_action": action,
                "dedup_key": item["fingerprint"],
            }
            if action == "trigger":
                event["payload"] = {
                    "summary": _line(item)[:1024],
                    "source": "herald",
                    "severity": item["severity"],
                    "timestamp": item["starts_at"],
                    "component": item["rule"],
                    "custom_details": {"labels": item["labels"], "value": item["value"]},
                }
            _post(self.http, self.events_url, _dump(event), {})


@dataclass
class Alertmanager:
    """Posts to an Alertmanager's v2 API. A firing alert carries ``endsAt`` four repeat
    intervals ahead, as Prometheus does, so an Alertmanager that stops hearing from Herald
    resolves it on its own; a resolved one carries the time it resolved."""

    config: AlertReceiver
    http: httpx.Client
    link: str | None
    per_alert: bool = False

    def send(self, delivery: Delivery) -> None:
        now = datetime.now(UTC)
        horizon = (now + timedelta(seconds=4 * self.config.repeat_interval_s)).isoformat()
        alerts = [
            {
                "labels": {
                    **{k: str(v) for k, v in item["labels"].items()},
                    "alertname": item["rule"],
                    "herald_rule": item["rule"],
                    **({"herald_state": "no_data"} if item["status"] == "no_data" else {}),
                },
                "annotations": {k: v for k, v in item["annotations"].items() if v},
                "startsAt": item["starts_at"],
                "endsAt": item["ends_at"]
                or (now.isoformat() if item["status"] == "resolved" else horizon),
                **({"generatorURL": f"{self.link}/alerts/{item['alert_id']}"} if self.link else {}),
            }
            for item in delivery.items
        ]
        url = alertmanager_api(_secret(self.config.url))
        _post(self.http, url, _dump(alerts), {})


@dataclass
class Email:
    config: AlertReceiver
    settings: Settings
    per_alert: bool = False

    def send(self, delivery: Delivery) -> None:
        message = EmailMessage()
        message["Subject"] = title(delivery)
        message["From"] = self.settings.smtp_from
        message["To"] = ", ".join(self.config.to)
        message["Message-ID"] = f"<{delivery.id}@herald>"
        message.set_content(
            "\n\n".join(
                f"{_line(item)}\nlabels: {json.dumps(item['labels'], sort_keys=True)}\n"
                f"since: {item['starts_at']}"
                + (
                    f"\nrunbook: {item['annotations']['runbook']}"
                    if item["annotations"].get("runbook")
                    else ""
                )
                for item in delivery.items
            )
        )
        s = self.settings
        smtp_class = smtplib.SMTP_SSL if s.smtp_ssl else smtplib.SMTP
        smtp = smtp_class(timeout=s.smtp_timeout_s)  # not connected yet: the watch is first
        with _cut_off_after(smtp, s.smtp_timeout_s) as watch:
            try:
                smtp.connect(s.smtp_host, s.smtp_port)
                if s.smtp_starttls and not s.smtp_ssl:
                    smtp.starttls(context=ssl.create_default_context())
                if s.smtp_username:
                    smtp.login(s.smtp_username, _secret(s.smtp_password) if s.smtp_password else "")
                smtp.send_message(message)
            except (smtplib.SMTPException, OSError) as exc:
                smtp.close()
                raise _smtp_failed(exc, watch, s.smtp_timeout_s) from None
            # Accepted: the goodbye is a courtesy, bounded by the same watch, never a failure.
            with contextlib.suppress(smtplib.SMTPException, OSError):
                smtp.quit()
            smtp.close()


def _smtp_failed(exc: BaseException, watch: _Watch, limit_s: float) -> DeliveryFailed:
    if watch.cut:  # whatever the cut made of the reply under way
        return DeliveryFailed(f"SMTP exchange took longer than {limit_s:g} s", retryable=True)
    if isinstance(exc, smtplib.SMTPResponseException):
        return DeliveryFailed(
            f"SMTP server answered {exc.smtp_code}",
            retryable=exc.smtp_code >= 400 and exc.smtp_code < 500,
        )
    return DeliveryFailed(f"SMTP error: {type(exc).__name__}", retryable=True)


@dataclass
class _Watch:
    cut: bool = False


@contextlib.contextmanager
def _cut_off_after(smtp: smtplib.SMTP, seconds: float) -> Iterator[_Watch]:
    """Bound the whole exchange, not each read: smtplib's timeout is per socket operation, so a
    relay trickling its replies byte by byte held a run for as long as it liked. Past
    ``seconds`` the connection is shut down under it (``cut``), and the read under way ends."""
    watch = _Watch()

    def cut() -> None:
        watch.cut = True
        with contextlib.suppress(OSError):
            if smtp.sock is not None:
                smtp.sock.shutdown(socket.SHUT_RDWR)

    timer = threading.Timer(seconds, cut)
    timer.daemon = True
    timer.start()
    try:
        yield watch
    finally:
        timer.cancel()


def channel_for(config: AlertReceiver, settings: Settings, http: httpx.Client) -> Channel:
    if config.type == "webhook":
        return Webhook(config, http)
    if config.type == "slack":
        return Slack(config, http)
    if config.type == "pagerduty":
        return PagerDuty(config, http, settings.pagerduty_events_url)
    if config.type == "alertmanager":
        return Alertmanager(config, http, settings.alert_link_url)
    return Email(config, settings)
