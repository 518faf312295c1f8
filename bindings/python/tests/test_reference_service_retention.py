"""Retention of the reference service: personal data older than the period is purged (token
records' addresses and user agents, rotated audit files), a retention record in the trail
accounts for the removed records, and a trail whose oldest records vanished without one is
reported; the operator's command runs it."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from refsvc_support import API, CONFIG, ROOT, Service, bearer

from examples.fastapi_service.retention import purge, rotated_files, verify_trail

DAY = 86400


def small_rotation_config(tmp_path: Path) -> Path:
    cfg = json.loads(CONFIG.read_text())
    cfg["permissions"]["policy_file"] = str(CONFIG.parent / "policy.json")
    cfg["audit"]["sinks"][0]["rotate_bytes"] = 4096  # a few records a file
    p = tmp_path / "config.json"
    p.write_text(json.dumps(cfg))
    return p


def traffic(s: Service, n: int) -> None:
    h = bearer(s.token("alice", client=s.client_at("10.8.0.1")))
    for i in range(n):
        assert s.client.post(f"{API}/equipment", json={"name": f"Press {i}"}, headers=h).status_code == 201
    s.rt.audit_flush()


def test_old_audit_files_go_with_a_record_that_keeps_the_trail_verifiable(tmp_path: Path) -> None:
    s = Service(tmp_path, config=small_rotation_config(tmp_path))
    with s.client:
        traffic(s, 30)
        rotated = rotated_files(s.audit_path)
        assert len(rotated) >= 3
        assert verify_trail(s.audit_path).intact
        # nothing is older than 90 days yet: nothing goes
        assert purge(s.app).files_removed == []
        rep = purge(s.app, now=time.time() + 91 * DAY)
        assert rep.files_removed == [p.name for p in rotated]
        assert rotated_files(s.audit_path) == [] or all(p.name not in rep.files_removed for p in rotated_files(s.audit_path))
        trail = verify_trail(s.audit_path)
        assert trail.intact and trail.purged_through_seq == rep.purged_through_seq == trail.first_seq - 1
        records = [json.loads(line) for line in s.audit_path.read_text().splitlines()]
        [mark] = [r for r in records if r.get("subtype") == "audit_retention"]
        assert mark["details"]["purged_through_seq"] == rep.purged_through_seq
        assert "10.8.0.1" not in json.dumps(mark)
        # later records rotate out again; the oldest remaining file deleted WITHOUT a record
        traffic(s, 30)
        oldest = rotated_files(s.audit_path)[0]
        oldest.unlink()
        bad = verify_trail(s.audit_path)
        assert not bad.intact and bad.problem is not None and "unaccounted" in bad.problem


def test_token_records_lose_address_and_user_agent_after_the_period(tmp_path: Path) -> None:
    s = Service(tmp_path)
    with s.client:
        s.pair("alice", client=s.client_at("10.8.0.2"))
        m = s.app.state.models
        with s.app.state.sessions() as db:
            rows = db.query(m.IssuedToken).all()
            assert rows and all(r.ip == "10.8.0.2" for r in rows)
        # two days later with a one-day period: the refresh token still lives (7 days), its
        # row stays for logout and anonymisation, without address or user agent
        rep = purge(s.app, now=time.time() + 2 * DAY, days=1)
        assert rep.tokens_cleared == 1 and rep.tokens_deleted == 1  # the access token had expired: gone
        with s.app.state.sessions() as db:
            [row] = db.query(m.IssuedToken).all()
            assert row.kind == "refresh" and row.ip is None and row.user_agent is None


def test_the_retention_command(tmp_path: Path) -> None:
    s = Service(tmp_path)
    with s.client:
        s.pair("alice", client=s.client_at("10.8.0.3"))
    env_py = [sys.executable, str(ROOT / "examples" / "fastapi_service" / "serve.py")]
    r = subprocess.run([*env_py, "retention", "--data-dir", str(tmp_path), "--days", "1"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("retention: 0 token records cleared")  # nothing is a day old yet
    r = subprocess.run([*env_py, "verify-audit", "--data-dir", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "intact" in r.stdout, r.stdout + r.stderr
