"""The reference service's policy reload (``POST /api/v1/admin/policy/reload``) in one
process, over HTTP (TestClient), embedded and with the real redis-server: the reloaded file
decides from the next request on; a file the library refuses leaves the active policy in
place. (test_workers.py checks that every worker process sees a reload.)"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Iterator

import pytest

import bitsec
from refsvc_support import API, ROOT, Service, bearer, redis_section

SERVICE = ROOT / "examples" / "fastapi_service"
RELOAD = f"{API}/admin/policy/reload"


@pytest.fixture(params=["embedded", "redis"])
def svc(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Service]:
    cfg_dir = tmp_path / "cfg"
    cfg_dir.mkdir()
    shutil.copy(SERVICE / "config.json", cfg_dir / "config.json")
    shutil.copy(SERVICE / "policy.json", cfg_dir / "policy.json")
    redis = redis_section(request) if request.param == "redis" else None
    s = Service(tmp_path / "data", redis, config=cfg_dir / "config.json")
    s.add_user("root", "inspection.admin")
    with s.client:
        yield s


def policy_path(svc: Service) -> Path:
    return svc.db_path.parent.parent / "cfg" / "policy.json"


def test_a_reloaded_policy_decides_the_next_request(svc: Service) -> None:
    root, victor = svc.token("root"), svc.token("victor")
    assert svc.client.get(f"{API}/equipment", headers=bearer(victor)).status_code == 200
    path = policy_path(svc)
    policy = json.loads(path.read_text())
    policy["roles"]["viewer"]["allow"].remove("equipment:read")
    path.write_text(json.dumps(policy))
    # the file alone changes nothing: the policy in force is the one loaded
    assert svc.client.get(f"{API}/equipment", headers=bearer(victor)).status_code == 200
    r = svc.client.post(RELOAD, headers=bearer(root))
    assert r.status_code == 200 and r.json() == {"reloaded": True}, r.text
    r = svc.client.get(f"{API}/equipment", headers=bearer(victor))
    assert r.status_code == 403 and r.json() == {"detail": "Insufficient permissions: equipment:read"}
    assert svc.rt.permission_stats()["reloads"] >= 1
    svc.rt.audit_flush()
    assert '"subtype":"policy_reloaded"' in svc.audit_path.read_text()


def test_a_refused_policy_file_leaves_the_active_policy(svc: Service) -> None:
    root, victor = svc.token("root"), svc.token("victor")
    path = policy_path(svc)
    policy = json.loads(path.read_text())
    policy["roles"]["viewer"]["allow"] = ["equipment:read", "no_such_resource:read"]
    policy["roles"]["viewer"]["allow"].remove("equipment:read")
    path.write_text(json.dumps(policy))
    r = svc.client.post(RELOAD, headers=bearer(root))
    assert r.status_code == 422, r.text
    assert r.json()["detail"].startswith("Policy file refused, the active policy stays: ")
    assert svc.client.get(f"{API}/equipment", headers=bearer(victor)).status_code == 200
    path.write_text("{not json")
    assert svc.client.post(RELOAD, headers=bearer(root)).status_code == 422
    path.unlink()
    r = svc.client.post(RELOAD, headers=bearer(root))
    assert r.status_code == 422 and r.json() == {"detail": "Policy file unreadable, the active policy stays"}
    assert svc.client.get(f"{API}/equipment", headers=bearer(victor)).status_code == 200


def test_only_system_update_may_reload(svc: Service) -> None:
    for user in ("alice", "mia", "victor"):  # ERP admin, manager, viewer: no grant on system
        r = svc.client.post(RELOAD, headers=bearer(svc.token(user)))
        assert r.status_code == 403 and r.json() == {"detail": "Insufficient permissions: system:update"}, r.text
    assert svc.client.post(RELOAD).status_code == 401
