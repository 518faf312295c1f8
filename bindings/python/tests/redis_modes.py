"""The Redis deployment modes the store-dependent Python suites run in, and the `redis`
section of each (against the session's servers of conftest.py)."""
from __future__ import annotations

import uuid

import pytest

# The Redis deployment modes the store-dependent suites run in: a standalone server, a
# six-node Redis Cluster, a TLS-only server (client certificate presented) and a primary
# behind three sentinels. Each server set is started once per session.
REDIS_MODES = ["standalone", "cluster", "tls", "sentinel"]


def redis_section(request: pytest.FixtureRequest, mode: str) -> dict:
    """The `redis` section for `mode` (one of REDIS_MODES), against the session's servers,
    with a key prefix of its own."""
    common = {"command_timeout_ms": 1000, "key_prefix": f"m-{uuid.uuid4().hex[:12]}:"}
    if mode == "standalone":
        server = request.getfixturevalue("redis_server")
        return {"host": "127.0.0.1", "port": server.port, **common}
    if mode == "cluster":
        cluster = request.getfixturevalue("redis_cluster")
        return {"mode": "cluster", "nodes": cluster.nodes.split(","), **common}
    if mode == "tls":
        server = request.getfixturevalue("tls_redis")
        certs = request.getfixturevalue("tls_certs")
        return {"host": "127.0.0.1", "port": server.port, **common,
                "tls": {"ca_file": certs.ca, "cert_file": certs.client_cert, "key_file": certs.client_key}}
    if mode == "sentinel":
        ss = request.getfixturevalue("shared_sentinel_set")
        return {"mode": "sentinel", "sentinels": ss.addresses, "master_name": "mymaster", **common}
    raise ValueError(f"unknown redis mode {mode!r}")


def redis_client(section: dict):  # type: ignore[no-untyped-def]
    """A redis-py client for the servers of a `redis` section of `redis_section` (the
    cluster's, the TLS server's with the client certificate, the sentinels' primary), to look
    at what bitsec wrote. The section's key prefix is not applied."""
    import redis
    from redis.cluster import ClusterNode, RedisCluster
    from redis.sentinel import Sentinel

    mode = section.get("mode", "standalone")
    if mode == "cluster":
        nodes = [ClusterNode(n.rsplit(":", 1)[0], int(n.rsplit(":", 1)[1])) for n in section["nodes"]]
        return RedisCluster(startup_nodes=nodes)
    if mode == "sentinel":
        sentinels = [(a.rsplit(":", 1)[0], int(a.rsplit(":", 1)[1])) for a in section["sentinels"]]
        return Sentinel(sentinels, socket_timeout=2).master_for(section["master_name"], socket_timeout=2)
    tls = section.get("tls")
    if tls:
        return redis.Redis(host=section["host"], port=section["port"], ssl=True, ssl_ca_certs=tls["ca_file"],
                           ssl_certfile=tls["cert_file"], ssl_keyfile=tls["key_file"])
    return redis.Redis(host=section["host"], port=section["port"])
