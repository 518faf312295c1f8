from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Iterator

import pytest

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "tools"))

from redis_fixture import Certs, RedisCluster, RedisServer, SentinelSet, make_certs  # noqa: E402
from redis_modes import REDIS_MODES  # noqa: E402
from redis_modes import redis_section  # noqa: E402,F401


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """The shared real redis-server (tools/redis_fixture.py), stopped by PID at the end,
    also when tests fail. Never skipped: a missing redis-server fails the tests."""
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture()
def redis_config(redis_server: RedisServer) -> dict:
    return {"redis": {"host": "127.0.0.1", "port": redis_server.port, "command_timeout_ms": 1000}}


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    """A real six-node Redis Cluster (three primaries, three replicas) of tools/redis_fixture.py,
    stopped by PID at the end."""
    cluster = RedisCluster().start()
    try:
        yield cluster
    finally:
        cluster.cleanup()


@pytest.fixture()
def fresh_redis() -> Iterator[RedisServer]:
    """A redis-server of the test's own, for tests that kill or pause it."""
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def tls_certs() -> Iterator[Certs]:
    """A CA, a server certificate (IP 127.0.0.1, DNS localhost), a client certificate and an
    unrelated CA, made with the openssl command into a temporary directory."""
    import shutil
    certs = make_certs()
    try:
        yield certs
    finally:
        shutil.rmtree(certs.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def tls_redis(tls_certs: Certs) -> Iterator[RedisServer]:
    """A TLS-only redis-server (`--port 0 --tls-port P`), client certificates optional."""
    server = RedisServer(certs=tls_certs).start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def tls_redis_mutual(tls_certs: Certs) -> Iterator[RedisServer]:
    """A TLS-only redis-server that requires a client certificate (`--tls-auth-clients yes`)."""
    server = RedisServer(certs=tls_certs, tls_auth_clients=True).start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture()
def sentinel_set() -> Iterator[SentinelSet]:
    """A primary, a replica (`replica-read-only no`, so that a write reaching it directly
    would show) and three sentinels of the test's own, each stopped by PID."""
    with SentinelSet(replica_extra=["--replica-read-only", "no"]) as s:
        yield s


@pytest.fixture()
def tls_sentinel_set(tls_certs: Certs) -> Iterator[SentinelSet]:
    """As `sentinel_set`, every server and sentinel TLS-only (replication over TLS too)."""
    with SentinelSet(certs=tls_certs) as s:
        yield s


@pytest.fixture(scope="session")
def tls_redis_cluster(tls_certs: Certs) -> Iterator[RedisCluster]:
    """A TLS-only Redis Cluster of three primaries (bus and replication over TLS too), stopped
    by PID at the end."""
    cluster = RedisCluster(size=3, replicas=0, certs=tls_certs).start()
    try:
        yield cluster
    finally:
        cluster.cleanup()


@pytest.fixture(scope="session")
def shared_sentinel_set() -> Iterator[SentinelSet]:
    """A primary, a replica and three sentinels shared by the mode-parametrised tests (no test
    kills it: the failover tests have sets of their own)."""
    with SentinelSet() as s:
        yield s


@pytest.fixture(params=REDIS_MODES)
def redis_mode_config(request: pytest.FixtureRequest) -> dict:
    """`{"redis": ...}` in each Redis mode in turn (the test runs once per mode)."""
    return {"redis": redis_section(request, request.param)}
