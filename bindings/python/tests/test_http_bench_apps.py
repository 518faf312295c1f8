"""The HTTP benchmark's two apps (bench/http/bench_apps.py) enforce the same policy, so
neither can post a number by skipping a control: TestClient, no timing. Both stacks (and the
incumbent's plain-ASGI audit variant) allow the operator, refuse the viewer's write, answer
401 for an expired, tampered or missing token, limit per user, and write one audit record
per request."""
from __future__ import annotations

import importlib.util
import json
import warnings
from pathlib import Path
from typing import Any, Iterator

import pytest

with warnings.catch_warnings():  # starlette's TestClient announces a move to httpx2
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

ROOT = Path(__file__).resolve().parents[3]
_spec = importlib.util.spec_from_file_location("bench_apps", ROOT / "bench" / "http" / "bench_apps.py")
assert _spec is not None and _spec.loader is not None
bench_apps = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_apps)

FULL = list(bench_apps.LAYERS)
STACKS = {
    "bitsec": ("bitsec", FULL),
    "guard": ("guard", FULL),
    "incumbent": ("incumbent", FULL),
    "incumbent-asgi-audit": ("incumbent", FULL[:-1] + ["audit_asgi"]),
}
PATH = "/api/v1/equipment/{}"


@pytest.fixture(scope="module", params=["HS256", "RS256"])
def keys(request: pytest.FixtureRequest) -> dict[str, Any]:
    return bench_apps.make_keys(request.param)


def settings(stack: str, keys: dict[str, Any], tmp_path: Path, **extra: Any) -> dict[str, Any]:
    name, layers = STACKS[stack]
    return {"stack": name, "layers": layers, "alg": keys["alg"], "secret": keys["secret"],
            "public_pem": keys["public_pem"], "audit_path": str(tmp_path / "audit.log"), **extra}


@pytest.fixture()
def client_of(tmp_path: Path) -> Iterator[Any]:
    opened: list[TestClient] = []

    def make(s: dict[str, Any]) -> TestClient:
        c = TestClient(bench_apps.build_app(s))
        c.__enter__()
        opened.append(c)
        return c

    yield make
    for c in opened:
        c.__exit__(None, None, None)


def bearer(t: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {t}"}


def request_records(stack: str, path: Path) -> list[dict[str, Any]]:
    """The per-request audit records: every line of the incumbent's file; bitsec's
    middleware records (its library also records lifecycle and automatic events)."""
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    if stack.startswith("incumbent"):
        return lines
    return [r for r in lines if "request_id" in r.get("details", {})]


@pytest.mark.parametrize("stack", list(STACKS))
def test_same_policy_same_answers_and_one_audit_record_per_request(stack: str, keys: dict[str, Any],
                                                                   tmp_path: Path, client_of: Any) -> None:
    s = settings(stack, keys, tmp_path)
    c = client_of(s)
    op = bench_apps.make_token(keys, "op-1", ["operator"])
    viewer = bench_apps.make_token(keys, "viewer-1", ["viewer"])
    manager = bench_apps.make_token(keys, "mgr-1", ["manager"])
    expired = bench_apps.make_token(keys, "op-1", ["operator"], exp_in=-3600)
    head, payload, sig = op.split(".")
    tampered = ".".join((head, payload, ("A" if sig[0] != "A" else "B") + sig[1:]))

    r = c.get(PATH.format(7), headers=bearer(op))
    assert r.status_code == 200 and r.json()["id"] == 7
    assert int(r.headers["X-RateLimit-Limit"]) == bench_apps.RATE_CAPACITY
    first = int(r.headers["X-RateLimit-Remaining"])
    r = c.post(PATH.format(7), headers=bearer(op), json={"status": "maintenance"})  # operator: update
    assert r.status_code == 200 and r.json()["updated"] == ["status"]
    assert int(r.headers["X-RateLimit-Remaining"]) < first  # every request takes from the user's bucket
    assert c.post(PATH.format(7), headers=bearer(manager), json={"s": 1}).status_code == 200  # inherits
    assert c.get(PATH.format(8), headers=bearer(viewer)).status_code == 200
    r = c.post(PATH.format(8), headers=bearer(viewer), json={"status": "x"})
    assert r.status_code == 403
    assert r.json()["detail"] == "Insufficient permissions: equipment:update"
    r = c.get(PATH.format(9), headers=bearer(expired))
    assert r.status_code == 401 and "expired" in r.json()["detail"]
    assert r.headers["WWW-Authenticate"].startswith("Bearer")
    r = c.get(PATH.format(9), headers=bearer(tampered))
    assert r.status_code == 401 and r.json()["detail"] == "Invalid token"
    r = c.get(PATH.format(9))
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
    c.__exit__(None, None, None)  # the lifespan's end flushes bitsec's audit queue

    records = request_records(stack, Path(s["audit_path"]))
    assert len(records) == 8  # one per request, refusals included
    text = json.dumps(records)
    assert "op-1" in text and "viewer-1" in text
    if stack in ("bitsec", "guard"):
        kinds = [(r["type"], r["result"]) for r in records]
        assert kinds.count(("data_access", "success")) == 4
        assert kinds.count(("authorization", "denied")) == 1
        assert kinds.count(("authentication", "failure")) == 3
        denied = next(r for r in records if r["type"] == "authorization")
        assert (denied["actor"], denied["resource"], denied["action"]) == ("viewer-1", "equipment", "update")
    else:
        kinds = [r["event_type"] for r in records]
        assert kinds.count("data_access") == 4
        assert kinds.count("authentication") == 3
        denied = next(r for r in records if r["event_type"] == "authorization")
        assert (denied["user_id"], denied["resource"], denied["action"], denied["result"]) == \
            ("viewer-1", "equipment", "update", "denied")
        assert sorted(r["failure_reason"] for r in records if r["event_type"] == "authentication") == \
            ["expired", "invalid", "missing"]


@pytest.mark.parametrize("stack", list(STACKS))
def test_rate_limit_is_per_user_and_answers_429(stack: str, keys: dict[str, Any], tmp_path: Path,
                                                client_of: Any) -> None:
    c = client_of(settings(stack, keys, tmp_path, rate_capacity=3))
    alice = bench_apps.make_token(keys, "alice", ["operator"])
    bob = bench_apps.make_token(keys, "bob", ["operator"])
    answers = [c.get(PATH.format(1), headers=bearer(alice)).status_code for _ in range(4)]
    assert answers == [200, 200, 200, 429]
    r = c.get(PATH.format(1), headers=bearer(alice))
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
    assert c.get(PATH.format(1), headers=bearer(bob)).status_code == 200  # another user's bucket


def test_policies_are_the_same_table() -> None:
    """casbin's rules are generated from the table bitsec's policy is built from, and both
    decide every role x resource x action alike (inheritance included)."""
    import bitsec

    lines = bench_apps.casbin_policy_lines()
    assert "g, operator, viewer" in lines and "p, viewer, equipment, read" in lines
    enforcer = bench_apps.casbin_enforcer()
    rt = bitsec.Runtime({"permissions": {"policy": bench_apps.BITSEC_POLICY}})
    try:
        allowed = 0
        for role in bench_apps.ROLES:
            for resource in bench_apps.BITSEC_POLICY["resources"]:
                for action in bench_apps.BITSEC_POLICY["actions"]:
                    mine = bool(rt.check_permission(bitsec.Principal("u", [role]), resource, action))
                    assert mine == enforcer.enforce(role, resource, action), (role, resource, action)
                    allowed += mine
    finally:
        rt.close()
    assert enforcer.enforce("admin", "equipment", "read")  # three levels of inheritance
    assert not enforcer.enforce("viewer", "equipment", "update")
    assert allowed == 3 + 5 + 9 + 12  # viewer, operator, manager, admin: inherited grants count
