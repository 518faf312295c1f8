"""The reference service under a flood of distinct client addresses aimed at its in-process
tables (embedded mode: with Redis the state lives in Redis and the in-process tables only
serve outages). With a small ``max_keys``, four times as many addresses as the tables hold
send requests and fail a login each; then a victim address must still be blocked after 5
failed logins, and a fresh address must still log in: the tables evict the flood's entries,
never a block, and never lock new clients out while the flood's entries can go."""
from __future__ import annotations

import json
from pathlib import Path

from refsvc_support import API, CONFIG, Service

MAX_KEYS = 64
FLOOD = 4 * MAX_KEYS


def small_tables_config(tmp_path: Path) -> Path:
    cfg = json.loads(CONFIG.read_text())
    cfg["rate_limits"]["max_keys"] = MAX_KEYS
    perms = cfg["permissions"]
    perms["policy_file"] = str((CONFIG.parent / perms["policy_file"]).resolve())
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "config.json"
    path.write_text(json.dumps(cfg))
    return path


def metric(text: str, name: str, table: str) -> int:
    prefix = f'{name}{{table="{table}"}} '
    return int(next(line for line in text.splitlines() if line.startswith(prefix))[len(prefix):])


def test_flood_of_addresses_neither_unblocks_nor_locks_out(tmp_path: Path) -> None:
    svc = Service(tmp_path, config=small_tables_config(tmp_path / "cfg"))
    svc.client.__enter__()
    try:
        # The flood: each address takes from the auth and default buckets over HTTP (a login
        # without a body and an unauthenticated request, no password hashing) and has one
        # failed login in the login guard, for an account of its own (reserved directly and
        # not refunded, as a wrong password leaves it: the scrypt of a real failed login would
        # make the test slow, the tables are the same).
        for i in range(FLOOD):
            ip = f"10.66.{i >> 8}.{i & 255}"
            c = svc.client_at(ip)
            assert c.post(f"{API}/auth/login", json={}).status_code == 422
            assert c.get(f"{API}/auth/me").status_code == 401
            assert svc.rt.login_guard_begin(f"flood-{i}", ip).allowed
        victim = svc.client_at("198.51.100.66")
        statuses = [svc.login("alice", "wrong", client=victim).status_code for _ in range(5)]
        assert statuses == [401, 401, 401, 401, 429]
        # More flood after the block: it stays.
        for i in range(FLOOD):
            assert svc.rt.login_guard_begin(f"flood2-{i}", f"10.67.{i >> 8}.{i & 255}").allowed
        assert svc.login("alice", client=victim).status_code == 429
        # A fresh address logs in.
        fresh = svc.client_at("192.0.2.200")
        assert svc.login("alice", client=fresh).status_code == 200
        text = svc.client.get("/metrics").text
        tables = ("rate_limit:auth", "rate_limit:default", "failure_window:login_client", "failure_window:login_account")
        for table in tables:
            assert metric(text, "bitsec_table_entries", table) <= MAX_KEYS
            assert metric(text, "bitsec_table_full_refusals_total", table) == 0
        # The default buckets (100 a minute) are full again within a second: dropped as idle,
        # not evicted. The auth buckets (10 a minute) and the failure windows are evicted.
        for table in ("rate_limit:auth", "failure_window:login_client", "failure_window:login_account"):
            assert metric(text, "bitsec_table_evictions_total", table) > 0
    finally:
        svc.client.__exit__(None, None, None)
