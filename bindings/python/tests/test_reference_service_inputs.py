"""The reference service's edges: numbers in ids and bodies out of range are a 422, never a
500 (every endpoint with an id or a number), and the data directory is private (0700, its
files 0600; datadir.py). Over HTTP, once with the embedded default and once with Redis
(refsvc_support.svc)."""
from __future__ import annotations

import logging
import os
import sqlite3
import stat
from pathlib import Path
from typing import Any

import pytest

from refsvc_support import API, CONFIG, Service, bearer, redis_section, svc  # noqa: F401 (svc is a fixture)

BAD_IDS = ["0", "-1", str(2 ** 63), str(2 ** 64), "9" * 40, str(-(2 ** 63) - 1), "1.5", "1e3", "1E400", "-1e3",
           "nan", "inf", "Infinity", "abc", "0x10", "٣"]
ID_ENDPOINTS = [("GET", f"{API}/equipment/{{}}"), ("PUT", f"{API}/equipment/{{}}"), ("DELETE", f"{API}/equipment/{{}}"),
                ("GET", "/v1/inspections/{}"), ("PUT", "/v1/inspections/{}"), ("DELETE", "/v1/inspections/{}"),
                ("GET", f"{API}/users/{{}}/export"), ("POST", f"{API}/users/{{}}/anonymize"),
                ("PUT", f"{API}/users/{{}}/roles"), ("POST", f"{API}/users/{{}}/revoke-sessions")]
BODY_OF = {f"{API}/equipment/{{}}": {"notes": "n"}, "/v1/inspections/{}": {"defect_count": 1},
           f"{API}/users/{{}}/roles": {"roles": ["viewer"]}}
# JSON number texts (sent raw: some are no Python float) and other values
BAD_NUMBERS = ["-1", "18446744073709551616", "9223372036854775808", "1e400", "-1e400", "1e999999999",
               "1.5e308", '"NaN"', '"Infinity"', '"-Infinity"', '"1e999999999"', '"abc"', "[]", "{}", "true",
               '"0x10"', '""']


def _everything(svc: Service, name: str = "root") -> dict[str, str]:
    """A user whom every guard lets through (a user of their own: 100 requests a minute each),
    logged in from an address of their own (10 logins a minute each)."""
    svc.add_user(name, ["admin", "inspection.admin"])
    return bearer(svc.token(name, client=svc.client_at(f"10.40.0.{len(svc.ids)}")))


def _send(svc: Service, method: str, path: str, raw: str, headers: dict[str, str]) -> Any:
    return svc.client.request(method, path, content=raw.encode(), headers={**headers, "Content-Type": "application/json"})


def test_ids_out_of_range_are_422_on_every_endpoint(svc: Service) -> None:
    for method, path in ID_ENDPOINTS:
        h = _everything(svc, f"root-{method}-{path}")
        body = BODY_OF.get(path)
        for bad in BAD_IDS:
            r = svc.client.request(method, path.format(bad), json=body, headers=h)
            assert r.status_code == 422, (method, path, bad, r.status_code, r.text)
        # the largest id is in range: not found, not an error
        r = svc.client.request(method, path.format(2 ** 63 - 1), json=body, headers=h)
        assert r.status_code == 404, (method, path, r.text)


def test_numbers_in_bodies_and_queries_out_of_range_are_422(svc: Service) -> None:
    h = _everything(svc)
    eid = svc.client.post(f"{API}/equipment", json={"name": "Lathe"}, headers=h).json()["id"]
    iid = svc.client.post("/v1/inspections", json={"lot_id": "L", "station": "S"}, headers=h).json()["id"]
    for raw in BAD_NUMBERS + ["10000000000000", "0.00001"]:
        for method, path in (("POST", f"{API}/equipment"), ("PUT", f"{API}/equipment/{eid}")):
            r = _send(svc, method, path, f'{{"name": "Lathe", "cost": {raw}}}', h)
            assert r.status_code == 422, (path, raw, r.status_code, r.text)
    h = _everything(svc, "root-2")
    for raw in BAD_NUMBERS + ["1000001", "1.5", '"1e3"']:
        for method, path in (("POST", "/v1/inspections"), ("PUT", f"/v1/inspections/{iid}")):
            r = _send(svc, method, path, f'{{"lot_id": "L", "station": "S", "defect_count": {raw}}}', h)
            assert r.status_code == 422, (path, raw, r.status_code, r.text)
    h = _everything(svc, "root-3")
    for bad in ["0", "-1", "1001", str(2 ** 64), "1.5", "1e3", "abc", "nan"]:
        r = svc.client.get("/v1/inspections", params={"limit": bad}, headers=h)
        assert r.status_code == 422, (bad, r.text)
    # in range: accepted
    assert _send(svc, "PUT", f"{API}/equipment/{eid}", '{"cost": 1000000000000}', h).json()["cost"] == "1000000000000"
    assert _send(svc, "PUT", f"{API}/equipment/{eid}", '{"cost": "0.0001"}', h).json()["cost"] == "0.0001"
    assert _send(svc, "PUT", f"/v1/inspections/{iid}", '{"defect_count": 1000000}', h).json()["defect_count"] == 1000000
    assert svc.client.get("/v1/inspections", params={"limit": "1000"}, headers=h).status_code == 200


def _modes(d: Path) -> dict[str, int]:
    return {p.name: stat.S_IMODE(p.lstat().st_mode) for p in d.iterdir() if p.is_file()}


def test_a_new_data_directory_is_private(svc: Service) -> None:
    h = bearer(svc.token("alice"))
    assert svc.client.post(f"{API}/equipment", json={"name": "Lathe", "serial_number": "S"}, headers=h).status_code == 201
    svc.rt.audit_flush()
    data = svc.db_path.parent
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    modes = _modes(data)
    assert {"service.db", "audit.jsonl", "field-key", "jwt-rs256-1.pem", "jwt-rs256-2.pem"} <= set(modes)
    assert modes == {name: 0o600 for name in modes}, modes


@pytest.fixture(params=["embedded", "redis"])
def redis_or_none(request: pytest.FixtureRequest) -> dict[str, Any] | None:
    return redis_section(request) if request.param == "redis" else None


def test_loose_modes_of_an_existing_data_directory_are_fixed_and_logged(
        tmp_path: Path, redis_or_none: dict[str, Any] | None, caplog: pytest.LogCaptureFixture) -> None:
    data = tmp_path / "data"
    data.mkdir()
    os.chmod(data, 0o755)
    with sqlite3.connect(data / "service.db") as con:
        con.execute("CREATE TABLE leftover (x)")
    for name in ("service.db-journal", "service.db-wal", "audit.jsonl.1", "notes.txt"):
        (data / name).write_bytes(b"")
    (data / "jwt-key").write_text("bUBO2rRcNMGo2nmMAi6pnh+rbCuyDz6rvhB7VvWQIs0=")
    (data / "field-key").write_text("3qq6B3KD4Lrix3X2Z1dObSvJWJ1YmPRsGCjjUfP9xos=")
    for p in data.iterdir():
        os.chmod(p, 0o644)
    os.chmod(data / "notes.txt", 0o666)
    with caplog.at_level(logging.WARNING, logger="examples.fastapi_service"):
        s = Service(data, redis_or_none)
    with s.client:
        assert s.login("alice").status_code == 200
        s.rt.audit_flush()
        assert stat.S_IMODE(data.stat().st_mode) == 0o700
        modes = _modes(data)
        assert modes == {name: 0o600 for name in modes}, modes
    fixed = [r.getMessage() for r in caplog.records if "readable by others" in r.getMessage()]
    assert len(fixed) == 8, fixed  # the directory and its 7 files
    assert all(str(data) in m for m in fixed)


def test_a_symbolic_link_as_data_directory_is_refused(tmp_path: Path) -> None:
    from examples.fastapi_service import create_app
    from examples.fastapi_service.datadir import DataDirError

    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(DataDirError, match="symbolic link"):
        create_app(CONFIG, f"sqlite:///{real}/service.db", data_dir=link)
    assert list(real.iterdir()) == []


def test_a_422_does_not_echo_the_rejected_value(svc: Service) -> None:
    secret = "correct horse battery staple " * 40  # longer than the 1024 characters a password may have
    r = svc.client.post(f"{API}/auth/login", json={"username": "alice", "password": secret})
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", "password"] and "battery" not in r.text
