"""Delivery of security alerts to a webhook in Alertmanager's webhook format (version "4"),
from a background thread, with retries and a bounded queue.

    alerter = bitsec.alerting.WebhookAlerter("https://alerts.example/hook", service="erp-api")
    alerter.alert("BruteForceBlock", severity="warning",
                  annotations={"summary": "A client was blocked after repeated failed logins"})
    ...
    alerter.close()   # delivers what is queued (up to its timeout), then stops the thread

Each POST is one Alertmanager notification: ``{"version": "4", "status": "firing",
"receiver", "groupKey", "groupLabels", "commonLabels", "commonAnnotations", "externalURL",
"truncatedAlerts": 0, "alerts": [...]}``, every alert with ``status`` "firing", ``labels``
(``alertname``, ``severity`` and the given ones), ``annotations``, ``startsAt`` (RFC 3339
UTC), ``endsAt`` "0001-01-01T00:00:00Z", ``generatorURL`` and a ``fingerprint`` (SHA-256 of
the labels and the start, 16 hex digits). A receiver written for Alertmanager (a chat bridge, a
pager) takes it as it is.

- ``alert`` never blocks and never raises for a delivery problem: it queues. The queue holds
  at most ``max_queue`` alerts (default 1000), plus the batch being sent; when it is full the
  OLDEST queued alert is dropped to make room (the newest say most about an attack in progress) and counted in
  ``stats()["dropped"]``.
- The thread sends up to ``batch_max`` alerts (default 50) per POST. A failed POST (a
  connection error, a timeout, any status other than 2xx) is retried with exponential backoff
  from ``backoff`` (0.5 s) doubling up to ``max_backoff`` (30 s), without limit: the alerts
  stay queued (under the queue's bound) until the receiver recovers. Failures are counted in
  ``stats()["failures"]``, deliveries in ``stats()["sent"]``; delivery is at least once (a
  receiver that stored a batch and then failed to answer gets it again).
- Labels and annotations are short text (names ``[A-Za-z_][A-Za-z0-9_]*``, values at most
  1024 characters, cut beyond). Never put secrets, tokens or passwords in them.
- ``url``: http or https only. Thread safe.
"""
from __future__ import annotations

import collections
import hashlib
import json
import re
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone
from typing import Any, Mapping

__all__ = ["WebhookAlerter"]

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_MAX_VALUE = 1024
_ZERO_TIME = "0001-01-01T00:00:00Z"


def _rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _clean(kind: str, items: Mapping[str, Any] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in (items or {}).items():
        if not isinstance(k, str) or not _NAME.match(k):
            raise ValueError(f"{kind} name must match [A-Za-z_][A-Za-z0-9_]*")
        out[k] = str(v)[:_MAX_VALUE]
    return out


class WebhookAlerter:
    """Posts alerts to ``url`` in Alertmanager's webhook format (see the module's text)."""

    def __init__(self, url: str, *, receiver: str = "bitsec", service: str | None = None, max_queue: int = 1000,
                 batch_max: int = 50, backoff: float = 0.5, max_backoff: float = 30.0, timeout: float = 5.0,
                 external_url: str = "", headers: Mapping[str, str] | None = None) -> None:
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ValueError("webhook url must be http:// or https://")
        if not 1 <= max_queue <= 1_000_000 or not 1 <= batch_max <= 10_000:
            raise ValueError("max_queue 1..1000000, batch_max 1..10000")
        if not (0 < backoff <= max_backoff) or not 0 < timeout <= 300:
            raise ValueError("0 < backoff <= max_backoff, 0 < timeout <= 300")
        self.url = url
        self.receiver = receiver
        self.service = service
        self.max_queue = max_queue
        self.batch_max = batch_max
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.timeout = timeout
        self.external_url = external_url
        self.headers = {"Content-Type": "application/json", **dict(headers or {})}
        self._queue: collections.deque[dict[str, Any]] = collections.deque()
        self._cond = threading.Condition()
        self._in_flight = 0
        self._closing = False
        self._stats = {"queued": 0, "sent": 0, "dropped": 0, "failures": 0}
        self._thread = threading.Thread(target=self._run, name="bitsec-alerting", daemon=True)
        self._thread.start()

    # ---- the caller's side ----

    def alert(self, name: str, *, severity: str = "critical", labels: Mapping[str, Any] | None = None,
              annotations: Mapping[str, Any] | None = None, starts_at: float | None = None) -> bool:
        """Queues one firing alert; returns False (and queues nothing) once closed."""
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError("alert name must match [A-Za-z_][A-Za-z0-9_]*")
        lab = {"alertname": name, "severity": str(severity)[:64], **_clean("label", labels)}
        if self.service and "service" not in lab:
            lab["service"] = self.service
        start = time.time() if starts_at is None else starts_at
        fp = hashlib.sha256(json.dumps([sorted(lab.items()), start]).encode()).hexdigest()[:16]
        item = {"status": "firing", "labels": lab, "annotations": _clean("annotation", annotations),
                "startsAt": _rfc3339(start), "endsAt": _ZERO_TIME, "generatorURL": self.external_url,
                "fingerprint": fp}
        with self._cond:
            if self._closing:
                return False
            if len(self._queue) >= self.max_queue:
                self._queue.popleft()
                self._stats["dropped"] += 1
            self._queue.append(item)
            self._stats["queued"] += 1
            self._cond.notify_all()
        return True

    def stats(self) -> dict[str, int]:
        """``queued`` (ever), ``sent``, ``dropped`` (queue full), ``failures`` (failed POSTs),
        ``pending`` (queued now, in flight included)."""
        with self._cond:
            return {**self._stats, "pending": len(self._queue) + self._in_flight}

    def flush(self, timeout: float = 10.0) -> bool:
        """Waits until every queued alert was delivered; False when ``timeout`` passed first."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._queue or self._in_flight:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.1))
            return True

    def close(self, timeout: float = 5.0) -> bool:
        """Delivers what is queued for up to ``timeout`` seconds, then stops the thread;
        returns whether everything was delivered (what was not is counted as dropped)."""
        done = self.flush(timeout)
        with self._cond:
            self._closing = True
            if not done:
                self._stats["dropped"] += len(self._queue)
                self._queue.clear()
            self._cond.notify_all()
        self._thread.join(timeout=self.timeout + 1)
        return done

    # ---- the thread ----

    def _payload(self, alerts: list[dict[str, Any]]) -> bytes:
        common = dict(alerts[0]["labels"])
        for a in alerts[1:]:
            common = {k: v for k, v in common.items() if a["labels"].get(k) == v}
        annotations = dict(alerts[0]["annotations"])
        for a in alerts[1:]:
            annotations = {k: v for k, v in annotations.items() if a["annotations"].get(k) == v}
        group = {k: common[k] for k in ("alertname",) if k in common}
        doc = {"version": "4", "groupKey": "{}:" + json.dumps(group, sort_keys=True), "truncatedAlerts": 0,
               "status": "firing", "receiver": self.receiver, "groupLabels": group, "commonLabels": common,
               "commonAnnotations": annotations, "externalURL": self.external_url, "alerts": alerts}
        return json.dumps(doc).encode()

    def _post(self, body: bytes) -> bool:
        req = urllib.request.Request(self.url, data=body, headers=self.headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310 (http/https checked)
                resp.read(65536)
                return 200 <= int(resp.status) < 300
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def _run(self) -> None:
        delay = self.backoff
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue:
                    return  # closing, nothing left
                batch = [self._queue.popleft() for _ in range(min(self.batch_max, len(self._queue)))]
                self._in_flight = len(batch)
            ok = self._post(self._payload(batch))
            with self._cond:
                self._in_flight = 0
                if ok:
                    self._stats["sent"] += len(batch)
                    delay = self.backoff
                else:
                    self._stats["failures"] += 1
                    # back at the front, oldest first, within the bound (drop-oldest)
                    for item in reversed(batch):
                        self._queue.appendleft(item)
                    while len(self._queue) > self.max_queue:
                        self._queue.popleft()
                        self._stats["dropped"] += 1
                self._cond.notify_all()
                if not ok:
                    if self._closing:  # close() gave up on these
                        self._stats["dropped"] += len(self._queue)
                        self._queue.clear()
                        return
                    self._cond.wait(delay)
                    delay = min(delay * 2, self.max_backoff)
