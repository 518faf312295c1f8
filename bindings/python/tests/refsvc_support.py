"""Shared by the reference-service tests (test_reference_service*.py): a service on a fresh
data directory, driven over HTTP through TestClient, once with the embedded default and
once with the session's real redis-server."""
from __future__ import annotations

import sys
import uuid
import warnings
from pathlib import Path
from typing import Any, Iterator

import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

import bitsec

ROOT = Path(__file__).resolve().parents[3]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from examples.fastapi_service import create_app, create_user  # noqa: E402

CONFIG = ROOT / "examples" / "fastapi_service" / "config.json"
API = "/api/v1"
PASSWORD = "{}-password-1"


class Service:
    """The service with alice (admin), victor (viewer), otto (operator) and mia (manager)
    in tenant fab-1; ``add_user`` adds more (any roles of the service's policy)."""

    def __init__(self, tmp_path: Path, redis: dict | None = None, config: Path = CONFIG) -> None:
        self.db_path = tmp_path / "service.db"
        self.redis = redis
        # A cheaper scrypt than the production default (N = 2^14 instead of 2^17): many logins.
        self.app = create_app(config, f"sqlite:///{self.db_path}", redis=redis, passwords={"ln": 14})
        self.audit_path: Path = self.app.state.audit_path
        self.ids: dict[str, int] = {}
        for name, role in [("alice", "admin"), ("victor", "viewer"), ("otto", "operator"), ("mia", "manager")]:
            self.add_user(name, role)
        self.client = TestClient(self.app)

    def add_user(self, name: str, role: str | list[str], tenant: str = "fab-1", **pii: Any) -> int:
        self.ids[name] = create_user(self.app, name, PASSWORD.format(name), role, tenant, **pii)
        return self.ids[name]

    @property
    def rt(self) -> bitsec.Runtime:
        return self.app.state.bitsec

    def client_at(self, ip: str) -> TestClient:
        """A client with another address (login limits and brute-force blocks are per
        address); the app's runtime is already open (``self.client``'s lifespan)."""
        return TestClient(self.app, client=(ip, 50000))

    def login(self, user: str, password: str | None = None, client: TestClient | None = None, **extra: Any) -> Any:
        return (client or self.client).post(f"{API}/auth/login", json={
            "username": user, "password": password or PASSWORD.format(user), **extra})

    def pair(self, user: str, client: TestClient | None = None) -> dict[str, Any]:
        r = self.login(user, client=client)
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]

    def token(self, user: str, client: TestClient | None = None) -> str:
        return self.pair(user, client)["access_token"]  # type: ignore[no-any-return]


def bearer(t: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {t}"}


def redis_section(request: pytest.FixtureRequest) -> dict[str, Any]:
    server = request.getfixturevalue("redis_server")
    return {"host": "127.0.0.1", "port": server.port, "command_timeout_ms": 1000,
            "key_prefix": f"refsvc:{uuid.uuid4().hex}:"}


@pytest.fixture(params=["embedded", "redis"])
def svc(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Service]:
    """Every test runs twice: the embedded default (no Redis), and with the shared real
    redis-server (a key prefix of the test's own, so no state carries over)."""
    redis = redis_section(request) if request.param == "redis" else None
    s = Service(tmp_path, redis)
    with s.client:
        if redis is not None:
            assert s.rt.describe()["sections"].get("redis") is not None
        yield s
