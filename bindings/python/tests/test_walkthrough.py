"""``make demo``'s HTTP part, so that ``make test`` catches a broken demo: serve.py runs the
reference service (a real uvicorn on 127.0.0.1, a free port, a temporary data directory),
walkthrough.py walks through it over HTTP, the service is stopped by PID and the audit
chain verified. Embedded default, and with the session's real redis-server. Also: the
walkthrough exits 1 when the service does not behave (a policy that lets viewers create),
and serve.py refuses a database of an older schema unless told to start afresh."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

import bitsec

ROOT = Path(__file__).resolve().parents[3]
SERVICE = ROOT / "examples" / "fastapi_service"
SERVE, WALKTHROUGH = SERVICE / "serve.py", SERVICE / "walkthrough.py"


class Served:
    """serve.py as a subprocess, stopped by its PID (SIGTERM, then SIGKILL) also when the test fails."""

    def __init__(self, data_dir: Path, *extra: str) -> None:
        self.data_dir = data_dir
        self.log_path = data_dir.parent / f"{data_dir.name}.log"
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, str(SERVE), "--data-dir", str(data_dir), "--url-file", str(data_dir / "url"),
             "--no-access-log", *extra], stdout=self.log, stderr=subprocess.STDOUT, env=os.environ.copy())
        self.url = self._wait_ready()

    def _wait_ready(self) -> str:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"serve.py exited with {self.proc.returncode}:\n{self.output()}")
            url_file = self.data_dir / "url"
            if url_file.exists() and url_file.read_text().strip():
                url = url_file.read_text().strip()
                try:
                    if httpx.get(url + "/health", timeout=2).status_code == 200:
                        return url
                except httpx.HTTPError:
                    pass
            time.sleep(0.1)
        pytest.fail(f"serve.py did not answer /health:\n{self.output()}")

    def output(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        """SIGTERM (a graceful shutdown flushes the audit queue); the exit status (uvicorn
        re-raises the signal once it has shut down: -SIGTERM)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


@pytest.fixture()
def served() -> Iterator[list[Served]]:
    started: list[Served] = []
    try:
        yield started
    finally:
        for s in started:
            s.stop()


def walkthrough(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(WALKTHROUGH), *args], capture_output=True, text=True,
                          timeout=600, env=os.environ.copy())


@pytest.mark.parametrize("state", ["embedded", "redis"])
def test_walkthrough_over_http(state: str, tmp_path: Path, served: list[Served],
                               request: pytest.FixtureRequest) -> None:
    data = tmp_path / "service"
    extra: list[str] = ["--config", str(_cheap_password_config(tmp_path))]
    prefix = f"walkthrough:{uuid.uuid4().hex}:"
    if state == "redis":
        server = request.getfixturevalue("redis_server")
        extra += ["--redis-port", str(server.port), "--redis-key-prefix", prefix]
    svc = Served(data, *extra)
    served.append(svc)
    assert svc.url.startswith("http://127.0.0.1:")
    users = json.loads((data / "users.json").read_text())
    plant_a = [r for u in users if u["tenant_id"] == "plant-a" for r in u["roles"]]
    assert sorted(plant_a) == ["admin", "inspection.admin", "inspection.operator", "inspection.quality_engineer",
                               "manager", "operator", "viewer"]
    assert any(u["tenant_id"] != "plant-a" for u in users)
    assert (data / "users.json").stat().st_mode & 0o777 == 0o600
    banner = svc.output()
    assert svc.url in banner and all(u["password"] in banner for u in users)

    run = walkthrough("--url", svc.url, "--data-dir", str(data))
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout
    for line in ["walkthrough: every step behaved as expected",
                 "/api/v1/auth/mfa/confirm {\"code\": \"",
                 "-> 200 {\"mfa_enabled\": true}",
                 "password alone          -> 401 {\"detail\": \"MFA code required\"}",
                 "(the next time step's code: the confirming step",
                 "\"mfa_enabled\": true}",
                 "vera (viewer)    200       403     403     403",
                 "ada (admin)      200       201     200     204",
                 "-> 403 {\"detail\": \"Insufficient permissions: equipment:create\"}",
                 "-> 404 {\"detail\": \"Equipment not found\"}",
                 "-> 201 id 1, status open",
                 "-> 403 {\"detail\": \"Insufficient permissions: inspections:update\"}",
                 "-> 403 {\"detail\": \"Insufficient permissions: inspections:read\"}",
                 "-> 200 status failed, closed_at ",
                 "-> 409 {\"detail\": \"Inspection is closed\"}",
                 "GET /api/v1/privacy/export -> 200 attachment",
                 "\"username\": \"mia\", \"email\": \"mia@plant-a.example\"",
                 "/roles {\"roles\": [\"super_admin\"]} -> 403 {\"detail\": \"Insufficient authority: the new "
                 "roles grant permissions you do not hold\"}",
                 "/anonymize -> 200 {\"id\": ",
                 "\"anonymized\": true",
                 "mia's access token, valid a moment ago: GET /v1/inspections -> 401 {\"detail\": \"Invalid token\"}",
                 "/export -> 410 {\"detail\": \"User was anonymised\"}",
                 "the same refresh token again -> 401",
                 "with the old access token -> 401 {\"detail\": \"Invalid token\"}",
                 "429 {\"detail\": \"Too many failed login attempts\"} | Retry-After:",
                 "429 {\"detail\": \"Rate limit exceeded\"} | Retry-After:",
                 "authorization_events_total{event_subtype=\"permission_denied\",result=\"denied\"}"]:
        assert line in out, f"{line!r} not in the walkthrough's output:\n{out}"
    raw = (data / "service.db").read_text(errors="replace")
    assert "SN-7731-XK-2026" not in raw and "Solder bridge on U7" not in raw
    with sqlite3.connect(data / "service.db") as con:
        mia = con.execute("SELECT username, role, anonymized_at FROM users WHERE id = 3").fetchone()
    assert mia[0].startswith("deleted-user-") and mia[1] == "" and mia[2] is not None

    if state == "redis":
        import redis

        client = redis.Redis(host="127.0.0.1", port=server.port)
        keys = client.keys(prefix + "*")
        client.close()
        assert keys, "no state of the service in Redis"

    assert svc.stop() in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in svc.output()
    audit = walkthrough("--audit", "--data-dir", str(data))
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert "intact:" in audit.stdout and "last hash" in audit.stdout
    report = bitsec.audit_verify(sorted(p for p in data.glob("audit.jsonl*") if p.suffix != ".shm"))
    assert report.intact and report.records > 20
    assert f"last hash {report.last_hash}" in audit.stdout
    records = [json.loads(line) for line in (data / "audit.jsonl").read_text().splitlines()]
    assert any(r.get("user_agent") == "bitsec-walkthrough/1" and r.get("ip") == "127.0.0.1" for r in records)
    assert records[-1]["type"] == "audit" and records[-1]["subtype"] == "stopped"
    assert any(r.get("subtype") == "data_anonymization" and r.get("resource_id") == "3" and r.get("actor") == "4"
               for r in records)

    if state == "embedded":  # `make serve` after `make demo`: the same directory serves again
        again = Served(data, *extra)
        served.append(again)
        assert "mia    plant-a" in again.output() and "(anonymised: cannot log in)" in again.output()
        assert "ada    plant-a" in again.output() and "+ TOTP (enrolled)" in again.output()
        vera = next(u for u in users if u["username"] == "vera")
        r = httpx.post(again.url + "/api/v1/auth/login", json={"username": "vera", "password": vera["password"]})
        assert r.status_code == 200


def _cheap_password_config(tmp_path: Path) -> Path:
    """The service's configuration with a cheaper scrypt (N = 2^14 instead of 2^17): the
    walkthrough's burst of logins must reach the rate limit (10 a minute) before the bucket
    refills, which at 2^17 depends on how busy the machine is."""
    cfg = json.loads((SERVICE / "config.json").read_text())
    cfg["permissions"]["policy_file"] = str(SERVICE / "policy.json")
    cfg["passwords"]["ln"] = 14
    path = tmp_path / "config-cheap-passwords.json"
    path.write_text(json.dumps(cfg))
    return path


def _permissive_config(tmp_path: Path) -> Path:
    """The service's configuration with its policy changed to let viewers create equipment."""
    policy: dict[str, Any] = json.loads((SERVICE / "policy.json").read_text())
    policy["roles"]["viewer"]["allow"].append("equipment:create")
    (tmp_path / "policy.json").write_text(json.dumps(policy))
    cfg = json.loads((SERVICE / "config.json").read_text())
    cfg["permissions"]["policy_file"] = str(tmp_path / "policy.json")
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    return path


def test_walkthrough_fails_when_the_service_misbehaves(tmp_path: Path, served: list[Served]) -> None:
    data = tmp_path / "service"
    svc = Served(data, "--config", str(_permissive_config(tmp_path)))
    served.append(svc)
    run = walkthrough("--url", svc.url, "--data-dir", str(data))
    assert run.returncode == 1, run.stdout + run.stderr
    assert "walkthrough: FAILED: viewer create: expected 403, got 201" in run.stderr
    assert "every step behaved as expected" not in run.stdout



def test_serve_refuses_a_database_of_the_first_slice_unless_fresh(tmp_path: Path, served: list[Served]) -> None:
    data = tmp_path / "service"
    data.mkdir()
    with sqlite3.connect(data / "service.db") as con:  # the first slice's users table
        con.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, username VARCHAR(64) UNIQUE NOT NULL, "
                    "password_hash VARCHAR(256) NOT NULL, role VARCHAR(32) NOT NULL, tenant_id VARCHAR(64) NOT NULL)")
        con.execute("INSERT INTO users (username, password_hash, role, tenant_id) VALUES ('old', 'x', 'admin', 'p')")
    (data / "users.json").write_text('[{"username": "old", "password": "pw", "role": "admin", "tenant_id": "p"}]')
    run = subprocess.run([sys.executable, str(SERVE), "--data-dir", str(data), "--url-file", str(data / "url")],
                         capture_output=True, text=True, timeout=120, env=os.environ.copy())
    assert run.returncode == 1 and not (data / "url").exists()
    assert "was written by an older version of the service (table users has no column" in run.stderr
    assert "--fresh" in run.stderr and "Traceback" not in run.stderr

    svc = Served(data, "--fresh")
    served.append(svc)
    users = json.loads((data / "users.json").read_text())
    assert [u["username"] for u in users] == ["vera", "otto", "mia", "ada", "bruno"]
    assert (data / "users.json").stat().st_mode & 0o777 == 0o600
    r = httpx.post(svc.url + "/api/v1/auth/login", json={"username": "otto", "password": users[1]["password"]})
    assert r.status_code == 200
    me = httpx.get(svc.url + "/api/v1/auth/me", headers={"Authorization": f"Bearer {r.json()['access_token']}"})
    assert me.json()["roles"] == ["operator", "inspection.operator"]
