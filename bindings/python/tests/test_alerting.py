"""bitsec.alerting.WebhookAlerter against a local receiver (http.server in a thread) that
fails, then recovers: Alertmanager's webhook format (version 4), retries, the bounded queue."""
from __future__ import annotations

import http.server
import json
import threading
from typing import Any, Iterator

import pytest

from bitsec.alerting import WebhookAlerter


class Receiver:
    """Answers 503 to the first ``fail`` POSTs (or while ``down``), then 200; keeps the bodies."""

    def __init__(self, fail: int = 0) -> None:
        self.fail = fail
        self.down = False
        self.attempts = 0
        self.received: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with outer.lock:
                    outer.attempts += 1
                    failing = outer.down or outer.attempts <= outer.fail
                    if not failing:
                        outer.received.append(json.loads(body))
                self.send_response(503 if failing else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def alerts(self) -> list[dict[str, Any]]:
        with self.lock:
            return [a for doc in self.received for a in doc["alerts"]]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.stop()


def test_alertmanager_v4_payload(receiver: Receiver) -> None:
    a = WebhookAlerter(receiver.url, service="erp-api", receiver="security")
    try:
        assert a.alert("BruteForceBlock", severity="warning", labels={"tenant": "fab-1"},
                       annotations={"summary": "blocked", "request_id": "r-1"}, starts_at=1_700_000_000.25)
        assert a.flush(10)
    finally:
        a.close()
    [doc] = receiver.received
    assert doc["version"] == "4" and doc["status"] == "firing" and doc["receiver"] == "security"
    assert doc["truncatedAlerts"] == 0 and doc["groupLabels"] == {"alertname": "BruteForceBlock"}
    assert doc["commonLabels"] == {"alertname": "BruteForceBlock", "severity": "warning", "tenant": "fab-1",
                                   "service": "erp-api"}
    assert doc["commonAnnotations"] == {"summary": "blocked", "request_id": "r-1"}
    assert set(doc) == {"version", "groupKey", "truncatedAlerts", "status", "receiver", "groupLabels", "commonLabels",
                        "commonAnnotations", "externalURL", "alerts"}
    [alert] = doc["alerts"]
    assert alert["status"] == "firing" and alert["startsAt"] == "2023-11-14T22:13:20.250Z"
    assert alert["endsAt"] == "0001-01-01T00:00:00Z" and len(alert["fingerprint"]) == 16
    assert alert["labels"] == doc["commonLabels"]


def test_retries_until_the_receiver_recovers() -> None:
    r = Receiver(fail=3)
    a = WebhookAlerter(r.url, backoff=0.01, max_backoff=0.05)
    try:
        for i in range(5):
            a.alert("RefreshTokenReplay", annotations={"n": i})
        assert a.flush(20)
        st = a.stats()
        assert st["sent"] == 5 and st["failures"] == 3 and st["dropped"] == 0 and st["pending"] == 0
        assert sorted(int(x["annotations"]["n"]) for x in r.alerts()) == list(range(5))
        assert r.attempts >= 4
    finally:
        a.close()
        r.stop()


def test_the_queue_is_bounded_and_drops_the_oldest(receiver: Receiver) -> None:
    receiver.down = True
    a = WebhookAlerter(receiver.url, max_queue=10, batch_max=100, backoff=0.01, max_backoff=0.02)
    try:
        for i in range(1000):  # a flood while the receiver is down: memory stays bounded
            a.alert("SessionHijackSuspected", annotations={"n": i})
        st = a.stats()
        # at most max_queue queued, plus the batch in flight (itself at most max_queue)
        assert st["pending"] <= 20 and st["dropped"] >= 980 and st["queued"] == 1000
        # a batch taken during the flood is in flight (older alerts): once its POST failed, it
        # went back into the queue and the oldest were dropped: then the receiver recovers
        for _ in range(3000):  # bounded: a failed POST comes back within the client's timeout
            if a.stats()["pending"] <= 10:
                break
            threading.Event().wait(0.01)
        assert a.stats()["pending"] <= 10
        receiver.down = False
        assert a.flush(20)
        got = sorted(int(x["annotations"]["n"]) for x in receiver.alerts())
        assert got == list(range(990, 1000))  # the newest ten
        assert a.stats()["dropped"] == 990
    finally:
        a.close()


def test_alert_never_blocks_on_an_unreachable_receiver_and_close_counts_the_rest() -> None:
    a = WebhookAlerter("http://127.0.0.1:9/unreachable", backoff=0.01, max_backoff=0.02, timeout=1)
    for i in range(3):
        assert a.alert("AuditEventRejected")
    assert a.close(timeout=0.2) is False
    st = a.stats()
    assert st["sent"] == 0 and st["dropped"] == 3 and st["pending"] == 0 and st["failures"] >= 1
    assert a.alert("AuditEventRejected") is False  # closed


def test_arguments_are_checked() -> None:
    with pytest.raises(ValueError):
        WebhookAlerter("file:///etc/passwd")
    a = WebhookAlerter("http://127.0.0.1:9/x")
    try:
        with pytest.raises(ValueError):
            a.alert("bad name")
        with pytest.raises(ValueError):
            a.alert("X", labels={"bad-label": "x"})
    finally:
        a.close(0.1)
