"""Redis Cluster mode through the Python binding (the C ABI): the same decisions as a
standalone server for rate limits, brute force, the login guard, revocation and TOTP, with
the keys spread over the three primaries of a real cluster."""
from __future__ import annotations

import uuid

import bitsec
from bitsec.tokens import TokenError
import pytest

from redis_fixture import RedisCluster, RedisServer, command

T0 = 1_800_000_000


def sections() -> dict:
    return {
        "allow_inline_secrets": True,
        "rate_limits": {
            "categories": {"default": {"capacity": 3, "period_seconds": 60}},
            "brute_force": {"max_failures": 2, "window_seconds": 600, "block_seconds": 600},
        },
        "tokens": {"keys": [{"kid": "hs", "alg": "HS256", "secret": {"value": "0123456789abcdef0123456789abcdef"}}],
                   "issuer": "iss", "audience": "aud", "cache_size": 0},
        "totp": {"state": "redis", "backup_codes": {"iterations": 1000}},
    }


def transcript(r: bitsec.Runtime, secret: str, codes: bitsec.BackupCodes) -> list[str]:
    out: list[str] = []
    for i in range(9):
        k = f"client-{i}"
        out += [repr(r.rate_limit_take(k, at=T0 + j)) for j in range(4)]
        r.rate_limit_reset(k)
        out.append(repr(r.rate_limit_take(k, at=T0 + 5)))
        out += [repr(r.bruteforce_record_failure(k, at=T0 + j)) for j in range(3)]
        out.append(repr(r.bruteforce_check(k, at=T0 + 4)))
        r.bruteforce_reset(k)
        d = r.login_guard_begin(f"user{i}", f"10.0.{i}.1", at=T0)
        out.append(repr(d))
        r.login_guard_succeeded(f"user{i}", f"10.0.{i}.1", d, at=T0)
        sub = f"subject-{i}"
        a = r.issue_token_pair({"sub": sub})
        b = r.issue_token_pair({"sub": sub})
        ca = r.verify_token(a["access_token"])
        out.append(str(r.revoke_token(jti=ca["jti"], exp=ca["exp"])))
        out.append(str(r.is_token_revoked(ca["jti"])))
        for t in (a, b):
            try:
                r.verify_token(t["access_token"])
                out.append("valid")
            except TokenError as e:
                out.append(e.reason)
        out.append(str(r.revoke_session(b["session_id"], sub)))
        try:
            r.verify_token(b["access_token"])
            out.append("valid")
        except TokenError as e:
            out.append(e.reason)
        code = r.totp_now(secret, at=T0)
        out += [r.totp_verify(secret, code, user=f"mfa-{i}", at=T0).reason for _ in range(2)]
        out += [r.backup_code_verify(f"mfa-{i}", codes.codes[i], codes.hashes, at=T0).reason for _ in range(2)]
    return out


def test_cluster_decisions_equal_standalone(redis_cluster: RedisCluster, redis_server: RedisServer) -> None:
    run = uuid.uuid4().hex[:8]
    cluster_cfg = dict(sections(), redis={"mode": "cluster", "nodes": redis_cluster.nodes.split(","),
                                          "command_timeout_ms": 1000, "key_prefix": f"c{run}:"})
    standalone_cfg = dict(sections(), redis={"host": "127.0.0.1", "port": redis_server.port,
                                             "command_timeout_ms": 1000, "key_prefix": f"s{run}:"})
    secret = bitsec.totp_generate_secret()
    with bitsec.Runtime(cluster_cfg) as c, bitsec.Runtime(standalone_cfg) as s:
        codes = s.backup_codes_generate(10)
        via_cluster = transcript(c, secret, codes)
        via_standalone = transcript(s, secret, codes)
    assert via_cluster == via_standalone
    assert "revoked" in via_cluster and "replayed" in via_cluster
    # Every primary holds some of this run's keys.
    holders = 0
    for port in redis_cluster.ports:
        if b"role:master" in command(port, "INFO", "replication") and command(port, "RANDOMKEY") != b"$-1\r\n":
            holders += 1
    assert holders == 3


@pytest.mark.parametrize("field,value,fragment", [
    ("db", 1, "redis.db"), ("host", "h", "redis.host"), ("key_prefix", "a{b}", "redis.key_prefix"),
])
def test_cluster_configuration_errors(field: str, value: object, fragment: str) -> None:
    with pytest.raises(bitsec.ConfigError, match=fragment):
        bitsec.Runtime({"redis": {"mode": "cluster", "nodes": ["127.0.0.1:7000"], field: value}})


def test_fork_after_open_child_uses_its_own_node_connections(redis_cluster: RedisCluster) -> None:
    """A runtime opened in cluster mode before fork(): the parent holds connections to every
    primary and the loaded slot map; the child drops the inherited connections (node pools
    included) and opens its own, so parent and child, both busy at once, never read each
    other's replies."""
    import os

    run = uuid.uuid4().hex[:8]
    cfg = {"redis": {"mode": "cluster", "nodes": redis_cluster.nodes.split(","), "command_timeout_ms": 2000,
                     "key_prefix": f"f{run}:"},
           "rate_limits": {"categories": {"default": {"capacity": 3, "period_seconds": 3600}}}}
    rt = bitsec.Runtime(cfg)
    try:
        # Connections to the three primaries (keys spread over the slots) before the fork.
        for n in range(30):
            assert rt.rate_limit_take(f"warm-{n}", "default").allowed
        pid = os.fork()
        if pid == 0:
            exit_status = 1
            try:
                for n in range(120):
                    ds = [rt.rate_limit_take(f"child-{n}", "default") for _ in range(4)]
                    assert [d.allowed for d in ds] == [True, True, True, False]
                    assert [d.remaining for d in ds[:3]] == [2, 1, 0]
                rt.close()
                exit_status = 0
            finally:
                os._exit(exit_status)
        for n in range(120):
            ds = [rt.rate_limit_take(f"parent-{n}", "default") for _ in range(4)]
            assert [d.allowed for d in ds] == [True, True, True, False]
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        # The child's takes reached the cluster: its buckets are spent for the parent too.
        for n in (0, 57, 119):
            assert not rt.rate_limit_take(f"child-{n}", "default").allowed
    finally:
        rt.close()


def test_tls_cluster_refuses_a_wrong_ca_and_a_wrong_host_name(tls_redis_cluster: RedisCluster, tls_certs) -> None:  # type: ignore[no-untyped-def]
    """In cluster mode too every node's certificate is verified (against the CA, by the
    address the slot map names, or `server_name`): a wrong CA or a wrong host name is refused
    with the reason, a revocation fails with BackendUnavailableError (never a crash, never
    an acceptance) and a rate limit follows its failure policy."""
    from bitsec import BackendUnavailableError
    nodes = tls_redis_cluster.nodes.split(",")
    client = {"cert_file": tls_certs.client_cert, "key_file": tls_certs.client_key}

    def runtime(tls: dict) -> bitsec.Runtime:
        return bitsec.Runtime({**sections(), "redis": {
            "mode": "cluster", "nodes": nodes, "command_timeout_ms": 1000, "connect_timeout_ms": 1000,
            "key_prefix": f"tlsc-{uuid.uuid4().hex[:10]}:", "tls": tls}})

    with runtime({"ca_file": tls_certs.ca, **client}) as rt:
        d = rt.rate_limit_take("k", at=T0)
        assert d.allowed and not d.degraded
        tok = rt.issue_token_pair({"sub": "s"})
        assert rt.revoke_token(jti=rt.verify_token(tok["access_token"])["jti"], exp=T0 + 10**9) is True

    for tls, fragments in (({"ca_file": tls_certs.other_ca, **client}, ["server certificate not accepted"]),
                           ({"ca_file": tls_certs.ca, "server_name": "redis.example.org", **client},
                            ["server certificate not accepted", "mismatch", "redis.example.org"])):
        with runtime(tls) as rt:
            with pytest.raises(BackendUnavailableError) as e:
                rt.revoke_token(jti="j-" + uuid.uuid4().hex, exp=T0 + 10**9)
            msg = str(e.value)
            for f in fragments:
                assert f in msg, msg
            d = rt.rate_limit_take("k", at=T0)
            assert d.degraded  # the category's failure policy decided
