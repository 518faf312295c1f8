"""The reference service as it is deployed on one host: 4 worker processes, under uvicorn
``--workers`` and under gunicorn (uvicorn-worker, ``--preload``), embedded default (no
Redis), over real HTTP with a new connection for every request (workers_support.py).

A decision must not depend on which worker served the request: limits, the login guard,
revocations, TOTP replay and policy reloads hold for the service as a whole, ``/metrics``
counts for the service, and the audit trail is one verifiable chain with a record for every
audited request, also when a worker is killed under load and replaced.

One service per server for the whole module (a start costs several seconds); each test
uses client addresses and users of its own, so that their limits do not meet. The audit
test runs last for each server: it stops the service and checks every request the module
made.
"""
from __future__ import annotations

from http import HTTPStatus

import json
import re
import threading
import time
from pathlib import Path
from typing import Iterator
from urllib.parse import parse_qs, urlparse

import pyotp
import pytest

from workers_support import (API, AUTH_LIMIT, SERVERS, Answer, WorkerService, audit_records, distinct_workers,
                             until_workers, verify_audit)

TOO_MANY = "Too many failed login attempts"
AUDITED_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


@pytest.fixture(scope="module", params=SERVERS)
def svc(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerService]:
    s = WorkerService(tmp_path_factory.mktemp(f"workers-{request.param}"), request.param, workers=4)
    try:
        yield s
    finally:
        s.stop(check=False)


def served_by_several(answers: list[Answer]) -> None:
    workers = distinct_workers(answers)
    assert len(workers) >= 2, f"every request was served by the same worker {workers}: the test proves nothing"


def test_auth_limit_holds_exactly_across_workers(svc: WorkerService) -> None:
    # 25 requests of the auth category from one client, 8 at a time on new connections:
    # a refresh with a token that is not one is answered 401 when the bucket allows it.
    answers = svc.burst([("POST", f"{API}/auth/refresh", {"client": "127.0.0.11",
                                                           "json_body": {"refresh_token": "not-a-token"}})] * 25)
    served_by_several(answers)
    statuses = [a.status for a in answers]
    assert statuses.count(401) == AUTH_LIMIT, statuses
    assert statuses.count(429) == 25 - AUTH_LIMIT, statuses
    limited = [a for a in answers if a.status == 429]
    assert all(a.headers["x-ratelimit-limit"] == str(AUTH_LIMIT) for a in limited)
    assert all(a.headers["x-ratelimit-remaining"] == "0" for a in limited)


def test_login_guard_blocks_after_its_threshold_whichever_workers_took_the_attempts(svc: WorkerService) -> None:
    client = "127.0.0.12"
    guesses = [svc.login("otto", client=client, password=f"guess-{i}") for i in range(5)]
    # the 5th failure starts the client's block, whichever worker counted the others
    assert [a.status for a in guesses] == [401, 401, 401, 401, 429], [(a.status, a.worker) for a in guesses]
    right = [svc.login("otto", client=client) for _ in range(3)]  # the right password, blocked client
    assert [a.status for a in right] == [429, 429, 429], [(a.status, a.worker, a.body) for a in right]
    assert all(a.json()["detail"] == TOO_MANY for a in right)
    served_by_several(guesses + right)


def test_logout_is_honoured_by_every_worker(svc: WorkerService) -> None:
    client = "127.0.0.13"
    token = svc.token("mia", client=client)
    before = until_workers(lambda: svc.request("GET", f"{API}/equipment", client=client, token=token), 2, 40)
    assert all(a.status == HTTPStatus.OK for a in before), [(a.status, a.body) for a in before]
    out = svc.request("POST", f"{API}/auth/logout", client=client, token=token)
    assert out.status == 204, (out.status, out.body)
    after = [svc.request("GET", f"{API}/equipment", client=client, token=token) for _ in range(24)]
    assert [a.status for a in after] == [401] * 24, [(a.status, a.worker) for a in after]
    served_by_several(after)
    assert distinct_workers(after) - {out.worker}, "no other worker than the one that logged out was asked"


def test_totp_code_is_accepted_once_across_workers(svc: WorkerService) -> None:
    client = "127.0.0.14"
    token = svc.token("bruno", client=client)
    enrol = svc.request("POST", f"{API}/auth/mfa/enroll", client=client, token=token)
    assert enrol.status == HTTPStatus.OK, (enrol.status, enrol.body)
    secret = parse_qs(urlparse(enrol.json()["provisioning_uri"]).query)["secret"][0]
    totp = pyotp.TOTP(secret)
    now = time.time()
    confirm = svc.request("POST", f"{API}/auth/mfa/confirm", client=client, token=token,
                          json_body={"code": totp.at(now)})
    assert confirm.status == HTTPStatus.OK, (confirm.status, confirm.body)
    # The next step's code, sent 6 times at once from 6 clients (each client's guard stays
    # below its threshold): one login gets in, every other worker sees the step used.
    code = totp.at(now + totp.interval)
    logins = svc.burst([("POST", f"{API}/auth/login", {
        "client": f"127.0.1.{i + 1}",
        "json_body": {"username": "bruno", "password": svc.users["bruno"]["password"], "totp_code": code}})
        for i in range(6)], threads=6)
    assert sorted(a.status for a in logins) == [200, 401, 401, 401, 401, 401], \
        [(a.status, a.worker, a.body) for a in logins]
    # the confirming code is used up too, on whichever worker
    again = [svc.login("bruno", client=f"127.0.2.{i + 1}", totp_code=totp.at(now)) for i in range(3)]
    assert [a.status for a in again] == [401, 401, 401], [(a.status, a.body) for a in again]
    served_by_several(logins + again)


def test_policy_reload_is_seen_by_every_worker(svc: WorkerService) -> None:
    client = "127.0.0.15"
    admin = svc.token("ada", client=client)  # inspection.admin: system:update
    viewer = svc.token("vera", client=client)
    before = until_workers(lambda: svc.request("GET", f"{API}/equipment", client=client, token=viewer), 2, 40)
    assert all(a.status == HTTPStatus.OK for a in before), [(a.status, a.body) for a in before]
    original = svc.policy_path.read_text()
    policy = json.loads(original)
    policy["roles"]["viewer"]["allow"].remove("equipment:read")
    try:
        svc.policy_path.write_text(json.dumps(policy))
        reload = svc.request("POST", f"{API}/admin/policy/reload", client=client, token=admin)
        assert reload.status == HTTPStatus.OK, (reload.status, reload.body)
        after = [svc.request("GET", f"{API}/equipment", client=client, token=viewer) for _ in range(24)]
        assert [a.status for a in after] == [403] * 24, [(a.status, a.worker) for a in after]
        served_by_several(after)
        assert distinct_workers(after) - {reload.worker}, "no other worker than the reloading one was asked"
    finally:
        svc.policy_path.write_text(original)
        restored = svc.request("POST", f"{API}/admin/policy/reload", client=client, token=admin)
    assert restored.status == HTTPStatus.OK, (restored.status, restored.body)
    back = [svc.request("GET", f"{API}/equipment", client=client, token=viewer) for _ in range(12)]
    assert [a.status for a in back] == [200] * 12, [(a.status, a.worker) for a in back]


def test_policy_reload_needs_system_update(svc: WorkerService) -> None:
    client = "127.0.0.16"
    manager = svc.token("mia", client=client)  # an ERP manager: no system:update
    a = svc.request("POST", f"{API}/admin/policy/reload", client=client, token=manager)
    assert a.status == 403, (a.status, a.body)
    assert svc.request("POST", f"{API}/admin/policy/reload", client=client).status == 401


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


def counters(text: str) -> dict[str, str]:
    """The samples of the metrics declared ``counter`` in a Prometheus text exposition, except
    the per-process series (a ``pid`` label: each worker's own, such as its ABI call count)."""
    kinds = {m.group(1): m.group(2) for m in re.finditer(r"^# TYPE (\S+) (\S+)$", text, re.M)}
    out = {}
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m and kinds.get(m.group(1)) == "counter" and 'pid="' not in (m.group(2) or ""):
            out[m.group(1) + (m.group(2) or "")] = m.group(3)
    return out


def test_metrics_counters_are_the_same_whichever_worker_answers(svc: WorkerService) -> None:
    client = "127.0.0.17"
    # load that moves counters: authentication failures, permission denials, rate-limit denials
    svc.burst([("GET", f"{API}/equipment", {"client": client})] * 12
              + [("POST", f"{API}/auth/refresh", {"client": client, "json_body": {"refresh_token": "x"}})] * 14)
    scrapes = svc.burst([("GET", "/metrics", {"client": client})] * 12, threads=4)
    assert all(a.status == HTTPStatus.OK for a in scrapes), [(a.status, a.error) for a in scrapes]
    served_by_several(scrapes)
    first = counters(scrapes[0].body.decode())
    assert any(k.startswith("bitsec_") for k in first), scrapes[0].body[:500]
    for a in scrapes[1:]:
        c = counters(a.body.decode())
        diff = {k: (first.get(k), c.get(k)) for k in first.keys() | c.keys() if first.get(k) != c.get(k)}
        assert not diff, f"worker {a.worker} counts otherwise than worker {scrapes[0].worker}: {diff}"


def _wait_for_records(svc: WorkerService, request_ids: set[str], bound: float = 30) -> set[str]:
    """The request ids of ``request_ids`` that have no record in the audit file after the
    trail's batches had up to ``bound`` seconds to reach it (empty: all recorded)."""
    deadline = time.monotonic() + bound
    while True:
        seen = {r.get("details", {}).get("request_id") for r in audit_records(svc.audit_path)} \
            if svc.audit_path.exists() else set()
        missing = request_ids - seen
        if not missing or time.monotonic() > deadline:
            return missing
        time.sleep(0.2)


def test_sigkill_of_a_worker_under_load(svc: WorkerService) -> None:
    client = "127.0.0.18"
    answers: list[Answer] = []
    stop = threading.Event()
    lock = threading.Lock()

    def load() -> None:
        while not stop.is_set():
            a = svc.request("POST", f"{API}/auth/refresh", client=client, json_body={"refresh_token": "not-a-token"})
            with lock:
                answers.append(a)
            time.sleep(0.005)  # a steady load, not a flood: uvicorn's replacement takes seconds to start

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        while len(answers) < 3 * AUTH_LIMIT:  # the client's bucket is empty before the kill
            time.sleep(0.01)
        before = svc.worker_pids()
        with lock:
            victim = next(a.worker for a in reversed(answers) if a.worker in before)
        svc.kill_worker(victim)
        replacements = set(svc.wait_workers(len(before), excluding=[victim])) - set(before)
        assert replacements, "no worker replaced the killed one"
        # until the replacement served some of the load (a bound, not an expectation: 90 s)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            with lock:
                if sum(1 for a in answers if a.worker in replacements) >= 5:
                    break
            time.sleep(0.01)
    finally:
        stop.set()
        for t in threads:
            t.join()
    statuses = [a.status for a in answers if a.status is not None]
    assert all(s in (401, 429) for s in statuses), sorted(set(statuses))
    assert statuses.count(401) <= AUTH_LIMIT, f"{statuses.count(401)} allowed of a limit of {AUTH_LIMIT}"
    from_replacement = [a for a in answers if a.worker in replacements]
    assert from_replacement, "the replacement worker served nothing"
    assert all(a.status == 429 for a in from_replacement), [a.status for a in from_replacement]
    served_by_several(answers)
    errors = [a.error for a in answers if a.status is None]
    assert len(errors) <= 16, errors[:5]  # connections the kill cut (at most one per thread and worker)
    missing = _wait_for_records(svc, {a.request_id for a in answers if a.status is not None})
    assert not missing, f"{len(missing)} answered requests have no audit record"


def test_audit_trail_verifies_and_records_every_request(svc: WorkerService) -> None:
    client = "127.0.0.19"
    admin = svc.token("ada", client=client)
    svc.burst([("POST", f"{API}/equipment", {"client": client, "token": admin, "json_body": {"name": f"press {i}"}})
               for i in range(8)] + [("GET", f"{API}/equipment", {"client": client})] * 8)
    status = svc.stop()  # the workers flush their audit queues as they stop
    assert status == 0, svc.output()
    report = verify_audit(svc.audit_path)
    assert report["intact"] is True, report
    # every request the module made of this service that the trail records: writes, 401,
    # 403 and 5xx answers
    audited = [a for a in svc.answers if a.status is not None and (
        a.method in AUDITED_METHODS or a.status in (401, 403) or a.status >= 500)]
    assert len(audited) > 100
    seen = {r.get("details", {}).get("request_id") for r in audit_records(svc.audit_path)}
    missing = [(a.method, a.path, a.status) for a in audited if a.request_id not in seen]
    assert not missing, f"{len(missing)} of {len(audited)} audited requests have no record: {missing[:5]}"
    assert len(distinct_workers(svc.answers)) >= 2
