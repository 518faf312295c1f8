"""Redis faults under load, for every Redis-backed feature at once (docs/faults.md).

Eight threads call rate limits (failure policies local, allow and deny), brute force,
token verification and revocation, the TOTP replay guard and the audit redis sink on one
runtime while the test's own redis-server (the ``fresh_redis`` fixture) is killed and
restarted on the same port, or paused (SIGSTOP) and resumed (SIGCONT). Every call is timed
and every result is checked against the configured failure policy, whenever it happens:

- rate limits: a degraded decision is the category's policy (``backend_deny`` denies,
  ``backend_allow`` allows, ``local`` decides with its share of the limit); a normal one is
  ``ok``/``limited``;
- brute force: degraded means blocked under ``deny``, not blocked under ``allow``;
- tokens and TOTP with Redis state: ``BackendUnavailableError`` (no decision) or the right
  decision; a revoked token is never valid, a TOTP step is never accepted twice;
- audit: emits never fail or wait on Redis; the outage is counted, a ``sink_recovered``
  record follows, every acknowledged record is in the file and the chain verifies;
- no call takes longer than its timeouts plus a generous margin (a bound on hangs, not a
  performance assertion), and no other exception surfaces;
- when Redis is back every feature answers normally again.

test_ratelimit_faults.py covers the rate limiter's own cases (single calls, script flush,
processes sharing a key); this file adds the other features and the load.
"""
from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path
from typing import Callable

import pytest
import redis as redispy

import bitsec
from bitsec import BackendUnavailableError, audit_verify

AT = 1_900_000_000
CONNECT_MS = 200
COMMAND_MS = 200
# Worst case of one call: a connect timeout, a wait for a pooled connection and a command
# timeout, plus a retry on a dead connection; then a margin for a loaded 2-core machine.
BOUND_S = (CONNECT_MS + 3 * COMMAND_MS) / 1000 + 2.0
THREADS = 8
SECRET_HS = "0123456789abcdef0123456789abcdef"


def make_config(port: int, audit_path: Path, bf_policy: str) -> dict:
    return {
        "allow_inline_secrets": True,
        "redis": {"host": "127.0.0.1", "port": port, "connect_timeout_ms": CONNECT_MS, "command_timeout_ms": COMMAND_MS,
                  "reconnect_backoff_ms": 10, "reconnect_backoff_max_ms": 100, "pool_size": 8,
                  "key_prefix": f"bitsec:faults-{uuid.uuid4().hex[:12]}:"},
        "rate_limits": {
            "outage_retry_ms": 50,
            "categories": {
                "local": {"capacity": 1000, "period_seconds": 3600, "local_share_percent": 50},
                "allow": {"capacity": 1000, "period_seconds": 3600, "failure_policy": "allow"},
                "deny": {"capacity": 1000, "period_seconds": 3600, "failure_policy": "deny"},
            },
            "brute_force": {"max_failures": 1000, "window_seconds": 3600, "block_seconds": 3600,
                            "failure_policy": bf_policy},
        },
        "tokens": {"keys": [{"kid": "hs", "alg": "HS256", "secret": {"value": SECRET_HS}}],
                   "issuer": "iss", "audience": "aud", "revocation": {"backend": "redis"}},
        "totp": {"state": "redis", "throttle": {"max_failures": 1000, "window_s": 3600}},
        "audit": {"sinks": [{"type": "file", "path": str(audit_path)}, {"type": "redis", "stream": "audit"}],
                  "durability": "batched"},
    }


class Load:
    """Eight threads calling every feature, checking each result, timing each call."""

    def __init__(self, rt: bitsec.Runtime, bf_policy: str) -> None:
        self.rt = rt
        self.bf_policy = bf_policy
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.problems: list[str] = []
        self.slowest = 0.0
        self.slowest_what = ""
        self.calls = 0
        # Outcomes per feature: "normal", "degraded" (policy decided) or "unavailable".
        self.outcomes: dict[str, dict[str, int]] = {}
        self.last: dict[tuple[int, str], str] = {}
        self.seqs: list[int] = []
        self.revoked: list[tuple[float, str]] = []  # (acknowledged at, token)
        self.accepted: list[tuple[float, str, str, int]] = []  # (at, user, secret, step instant)
        self.threads = [threading.Thread(target=self._worker, args=(i,), daemon=True) for i in range(THREADS)]
        self.secret = bitsec.totp_generate_secret()
        self.valid = rt.sign_token({"sub": "u", "iss": "iss", "aud": "aud", "exp": 2_000_000_000, "jti": "valid-" + uuid.uuid4().hex})
        self.pre_revoked = rt.sign_token({"sub": "u", "iss": "iss", "aud": "aud", "exp": 2_000_000_000,
                                          "jti": "pre-" + uuid.uuid4().hex})
        assert rt.revoke_token(self.pre_revoked, at=AT)

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=60)
        assert not any(t.is_alive() for t in self.threads), "a worker hangs"

    def _problem(self, text: str) -> None:
        with self.lock:
            if len(self.problems) < 50:
                self.problems.append(text)

    def _call(self, i: int, what: str, fn: Callable[[], object]) -> tuple[object | None, BaseException | None]:
        t0 = time.monotonic()
        try:
            result, err = fn(), None
        except BaseException as e:  # noqa: BLE001 -- classified by the caller
            result, err = None, e
        dt = time.monotonic() - t0
        with self.lock:
            self.calls += 1
            if dt > self.slowest:
                self.slowest, self.slowest_what = dt, what
        if dt > BOUND_S:
            self._problem(f"thread {i}: {what} took {dt:.2f} s (bound {BOUND_S:.2f} s)")
        return result, err

    def _outcome(self, i: int, feature: str, outcome: str) -> None:
        with self.lock:
            d = self.outcomes.setdefault(feature, {})
            d[outcome] = d.get(outcome, 0) + 1
            self.last[(i, feature)] = outcome

    def _unavailable_or_problem(self, i: int, feature: str, what: str, err: BaseException) -> None:
        if isinstance(err, BackendUnavailableError):
            self._outcome(i, feature, "unavailable")
        else:
            self._problem(f"thread {i}: {what}: unexpected {type(err).__name__}: {err}")

    def _worker(self, i: int) -> None:
        rt = self.rt
        n = 0
        user = f"user-{i}-{uuid.uuid4().hex[:8]}"
        bf_key = f"bf-{i}-{uuid.uuid4().hex[:8]}"
        while not self.stop.is_set():
            n += 1
            key = f"k{i}-{n}"  # a fresh bucket each time: a normal decision is always "ok"
            # Rate limits, one category per failure policy.
            for cat in ("local", "allow", "deny"):
                d, err = self._call(i, f"rate_limit_take {cat}", lambda: rt.rate_limit_take(key, cat, at=AT))
                if err is not None or d is None:
                    self._problem(f"thread {i}: rate_limit_take {cat}: unexpected {type(err).__name__}: {err}")
                    continue
                if not d.degraded:
                    ok = d.allowed and d.reason == "ok" and d.limit == 1000
                elif cat == "deny":
                    ok = not d.allowed and d.reason == "backend_deny" and d.retry_after >= 1
                elif cat == "allow":
                    ok = d.allowed and d.reason == "backend_allow"
                else:
                    ok = d.allowed and d.reason == "ok" and d.limit == 500  # in process, 50 % share
                if not ok:
                    self._problem(f"thread {i}: rate_limit_take {cat}: wrong decision {tuple(d)} degraded={d.degraded}")
                self._outcome(i, f"rate_{cat}", "degraded" if d.degraded else "normal")

            # Brute force: one failure, then a check (never blocked unless the policy says so).
            s, err = self._call(i, "bruteforce_record_failure", lambda: rt.bruteforce_record_failure(bf_key, at=AT))
            if err is not None:
                self._problem(f"thread {i}: bruteforce_record_failure: unexpected {type(err).__name__}: {err}")
            s, err = self._call(i, "bruteforce_check", lambda: rt.bruteforce_check(bf_key, at=AT))
            if err is not None or s is None:
                self._problem(f"thread {i}: bruteforce_check: unexpected {type(err).__name__}: {err}")
            else:
                want_blocked = s.degraded and self.bf_policy == "deny"
                if s.blocked != want_blocked:
                    self._problem(f"thread {i}: bruteforce_check blocked={s.blocked} degraded={s.degraded} ({self.bf_policy})")
                self._outcome(i, "bruteforce", "degraded" if s.degraded else "normal")

            # Tokens: the valid one, the one revoked before the load, and a fresh one revoked now.
            c, err = self._call(i, "verify_token valid", lambda: rt.verify_token(self.valid, at=AT))
            if err is not None:
                self._unavailable_or_problem(i, "tokens", "verify_token valid", err)
            else:
                self._outcome(i, "tokens", "normal")
            c, err = self._call(i, "verify_token revoked", lambda: rt.verify_token(self.pre_revoked, at=AT))
            if err is None:
                self._problem(f"thread {i}: a revoked token verified")
            elif not isinstance(err, bitsec.RevokedTokenError):
                self._unavailable_or_problem(i, "tokens", "verify_token revoked", err)
            jti = f"t{i}-{n}-{uuid.uuid4().hex[:6]}"
            tok = rt.sign_token({"sub": "u", "iss": "iss", "aud": "aud", "exp": 2_000_000_000, "jti": jti})
            newly, err = self._call(i, "revoke_token", lambda: rt.revoke_token(tok, at=AT))
            if err is not None:
                self._unavailable_or_problem(i, "revoke", "revoke_token", err)
            elif newly is not True:
                self._problem(f"thread {i}: revoke_token of a fresh jti returned {newly}")
            else:
                with self.lock:
                    self.revoked.append((time.monotonic(), tok))
                c, err = self._call(i, "verify_token just revoked", lambda: rt.verify_token(tok, at=AT))
                if err is None:
                    self._problem(f"thread {i}: a token verified right after its revocation was acknowledged")
                elif not isinstance(err, bitsec.RevokedTokenError):
                    self._unavailable_or_problem(i, "tokens", "verify_token just revoked", err)

            # TOTP with Redis state: a new step per iteration, accepted once, then replayed.
            at = AT + n * 30
            code = bitsec.totp_now(self.secret, at=at)
            first = None
            for attempt in (1, 2):
                d, err = self._call(i, "totp_verify", lambda: rt.totp_verify(self.secret, code, user, at=at))
                if err is not None:
                    self._unavailable_or_problem(i, "totp", "totp_verify", err)
                    continue
                self._outcome(i, "totp", "normal")
                if d.reason == "ok":
                    if first == "ok":
                        self._problem(f"thread {i}: TOTP step {at // 30} accepted twice")
                    first = "ok"
                    with self.lock:
                        self.accepted.append((time.monotonic(), user, code, at))
                elif d.reason != "replayed":
                    self._problem(f"thread {i}: totp_verify reason {d.reason}")

            # Audit: an emit never fails and never waits for Redis.
            seq, err = self._call(i, "audit_emit", lambda: rt.audit_emit(
                {"type": "application", "subtype": "faults", "actor": f"t{i}-{n}"}))
            if err is not None or not seq:
                self._problem(f"thread {i}: audit_emit: {seq} {type(err).__name__ if err else ''}: {err}")
            else:
                with self.lock:
                    self.seqs.append(seq)

    def wait_until_normal(self, limit_s: float = 20.0) -> None:
        """Every feature of every thread answered normally at least once since `since`."""
        deadline = time.monotonic() + limit_s
        features = ("rate_local", "rate_allow", "rate_deny", "bruteforce", "tokens", "totp")
        with self.lock:
            for f in features:
                for i in range(THREADS):
                    self.last.pop((i, f), None)
        while time.monotonic() < deadline:
            with self.lock:
                done = all(self.last.get((i, f)) == "normal" for f in features for i in range(THREADS))
            if done:
                return
            time.sleep(0.05)
        with self.lock:
            pending = sorted({f for f in features for i in range(THREADS) if self.last.get((i, f)) != "normal"})
        raise AssertionError(f"not recovered after {limit_s} s: {pending}")


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def check_audit(path: Path, seqs: list[int]) -> list[dict]:
    recs = records(path)
    in_file = {r["seq"] for r in recs}
    assert not [s for s in seqs if s not in in_file], "acknowledged audit events missing"
    report = audit_verify([path])
    assert report.intact, report.problem
    return recs


def run_fault(fresh_redis, tmp_path: Path, bf_policy: str, fault: str) -> None:
    audit_path = tmp_path / "audit.log"
    cfg = make_config(fresh_redis.port, audit_path, bf_policy)
    client = redispy.Redis(port=fresh_redis.port)
    with bitsec.Runtime(cfg) as rt:
        load = Load(rt, bf_policy)
        load.start()
        try:
            time.sleep(0.5)
            load.wait_until_normal()
            if fault == "kill":
                # A snapshot first, as a server with persistence would have: the revocations
                # and TOTP steps acknowledged before it must survive the restart.
                # (Taken before SAVE is sent: what was acknowledged earlier is in the snapshot.)
                saved_at = time.monotonic()
                client.save()
                fresh_redis.kill()
            else:
                saved_at = time.monotonic()
                fresh_redis.pause()
            time.sleep(2.0)
            with load.lock:
                during = {f: dict(o) for f, o in load.outcomes.items()}
            if fault == "kill":
                fresh_redis.restart()
            else:
                fresh_redis.resume()
            load.wait_until_normal()
            time.sleep(0.5)
        finally:
            load.finish()
            if fault == "pause":
                fresh_redis.resume()  # never leave it stopped, whatever failed

        assert not load.problems, "\n".join(load.problems)
        # The fault was seen: every Redis-backed feature fell back to its policy at least once.
        for f, kind in (("rate_local", "degraded"), ("rate_allow", "degraded"), ("rate_deny", "degraded"),
                        ("bruteforce", "degraded"), ("tokens", "unavailable"), ("totp", "unavailable")):
            assert during.get(f, {}).get(kind, 0) > 0, (f, during)

        # Acknowledged state from before the fault is still enforced after it.
        for when, tok in load.revoked:
            if when < saved_at:
                with pytest.raises(bitsec.RevokedTokenError):
                    rt.verify_token(tok, at=AT)
        for when, user, code, at in load.accepted:
            if when < saved_at:
                assert rt.totp_verify(load.secret, code, user, at=at).reason == "replayed"

        # Audit: the redis sink's outage was counted and its recovery recorded.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            rt.audit_emit({"type": "application", "subtype": "after_fault"})
            rt.audit_flush()
            if any(r["subtype"] == "sink_recovered" and r["details"]["sink"] == "redis" for r in records(audit_path)):
                break
            time.sleep(0.05)
        stats = rt.audit_stats()
        assert stats["sink_errors"]["redis"] >= 1, stats
        assert stats["file_failure"] is None
        metrics = rt.metrics_text()
        assert 'bitsec_audit_sink_errors_total{sink="redis"} 0' not in metrics
        assert "bitsec_audit_sink_failing 0" in metrics
        seqs = list(load.seqs)
        print(f"{fault}/{bf_policy}: {load.calls} calls, slowest {load.slowest:.3f} s ({load.slowest_what}), "
              f"outcomes during the fault {during}")
    client.close()
    recs = check_audit(audit_path, seqs)
    assert any(r["subtype"] == "sink_recovered" and r["details"]["sink"] == "redis" for r in recs)
    # Records written while Redis was back reached the stream.
    check = redispy.Redis(port=fresh_redis.port)
    stream = check.xrange(cfg["redis"]["key_prefix"] + "audit")
    check.close()
    streamed = {int(fields[b"seq"]) for _, fields in stream}
    after = [r["seq"] for r in recs if r["subtype"] == "after_fault"]
    assert after and after[-1] in streamed


def test_killed_and_restarted_under_load(fresh_redis, tmp_path: Path) -> None:
    run_fault(fresh_redis, tmp_path, "deny", "kill")


def test_paused_and_resumed_under_load(fresh_redis, tmp_path: Path) -> None:
    run_fault(fresh_redis, tmp_path, "allow", "pause")
