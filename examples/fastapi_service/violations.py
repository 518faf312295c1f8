"""Security violations posted to a webhook in Alertmanager's format (``bitsec.alerting``),
from the configuration's ``service.alerting`` section:

    "alerting": {"webhook_url": "https://alerts.example/hook", "max_queue": 1000,
                 "timeout_seconds": 5, "receiver": "security"}

Without a ``webhook_url`` nothing is posted (the violations are still in the audit trail and
logged). Posted, each as one firing alert (labels ``alertname``, ``severity``, ``service``,
``tenant`` when known; annotations ``summary``, ``description``, ``request_id``, ``actor``: the
user's id, never a name, token or password):

- ``BruteForceBlock`` (warning): a failed login started the login guard's block of a client or
  the back-off of an account;
- ``SessionHijackSuspected`` (critical): a refresh token presented from another client address
  AND another user agent than the pair was issued to; the session is revoked (401);
- ``RefreshTokenReplay`` (critical): a refresh token used again after it was spent (a stolen
  copy, or a client bug), or after its session was revoked; the whole session is revoked;
- ``AuditEventRejected`` (critical): bitsec refused an audit event of the service.

Delivery is from a background thread: retries with backoff until the receiver answers 2xx, a
bounded queue dropping the oldest (``bitsec.alerting``); the thread is stopped, after a last
delivery attempt of up to 5 s, when the service stops.
"""
from __future__ import annotations

import contextlib
import logging
from typing import Any, AsyncIterator, Callable

from bitsec.alerting import WebhookAlerter

log = logging.getLogger("examples.fastapi_service")

SEVERITY = {"BruteForceBlock": "warning", "SessionHijackSuspected": "critical", "RefreshTokenReplay": "critical",
            "AuditEventRejected": "critical"}
SUMMARY = {
    "BruteForceBlock": "A client or account was blocked after repeated failed logins",
    "SessionHijackSuspected": "A refresh token came from another address and user agent: session revoked",
    "RefreshTokenReplay": "A spent refresh token was used again: session revoked",
    "AuditEventRejected": "The audit trail refused an event of the service",
}


def make_alerter(section: dict[str, Any] | None, service: str) -> WebhookAlerter | None:
    section = dict(section or {})
    unknown = set(section) - {"webhook_url", "max_queue", "timeout_seconds", "receiver"}
    if unknown:
        raise ValueError(f"service.alerting: unknown member(s) {sorted(unknown)}")
    url = section.get("webhook_url")
    if not url:
        return None
    return WebhookAlerter(url, receiver=str(section.get("receiver", "bitsec")), service=service,
                          max_queue=int(section.get("max_queue", 1000)),
                          timeout=float(section.get("timeout_seconds", 5)))


def alerter_lifespan(get: Callable[[Any], WebhookAlerter | None]) -> Callable[[Any], Any]:
    """An inner lifespan closing the app's alerter at shutdown (a last delivery of up to 5 s)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        try:
            yield
        finally:
            alerter = get(app)
            if alerter is not None:
                alerter.close(timeout=5.0)

    return lifespan


def violation(app: Any, name: str, *, request_id: str | None = None, actor: str | None = None,
              tenant: str | None = None, description: str = "") -> None:
    """Posts (queues) the violation ``name`` when a webhook is configured; logs it always."""
    log.warning("security violation %s (request %s)", name, request_id or "-")
    alerter: WebhookAlerter | None = getattr(app.state, "alerter", None)
    if alerter is None:
        return
    annotations = {"summary": SUMMARY[name], "description": description}
    if request_id:
        annotations["request_id"] = request_id
    if actor:
        annotations["actor"] = actor
    alerter.alert(name, severity=SEVERITY[name], labels={"tenant": tenant} if tenant else None, annotations=annotations)
