from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Iterator

import pytest

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "tools"))

from redis_fixture import RedisCluster, RedisServer  # noqa: E402


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
