"""MFA: RFC vectors, pyotp interop, replay, throttling, backup codes, provisioning."""
from __future__ import annotations

import hashlib
import json
import os
import secrets
import threading
import time
import uuid
from pathlib import Path

import pyotp
import pytest

import bitsec
from bitsec import BackendUnavailableError, InvalidArgumentError, MalformedError, NotConfiguredError

VECTORS = Path(__file__).resolve().parents[3] / "tests" / "vectors" / "totp"
DIGESTS = {"SHA1": hashlib.sha1, "SHA256": hashlib.sha256, "SHA512": hashlib.sha512}


def user() -> str:
    return f"py-{os.getpid()}-{uuid.uuid4().hex}"


def test_rfc4226_vectors() -> None:
    doc = json.loads((VECTORS / "rfc4226.json").read_text())
    s = doc["secret"]["base32"]
    for v in doc["vectors"]:
        assert bitsec.hotp(s, v["count"]) == v["hotp"]
        d = bitsec.hotp_check(s, v["hotp"], 0, look_ahead=9)
        assert d and d.step == v["count"]


def test_rfc6238_vectors() -> None:
    doc = json.loads((VECTORS / "rfc6238.json").read_text())
    assert len(doc["vectors"]) == 18
    for v in doc["vectors"]:
        seed = doc["seeds"][v["mode"]]["base32"]
        assert bitsec.totp_now(seed, algorithm=v["mode"], digits=8, at=v["time"]) == v["totp"]
        d = bitsec.totp_check(seed, v["totp"], algorithm=v["mode"], digits=8, window=0, at=v["time"])
        assert d.accepted and d.step == v["time"] // 30


@pytest.mark.parametrize("algorithm", ["SHA1", "SHA256", "SHA512"])
@pytest.mark.parametrize("digits", [6, 7, 8])
@pytest.mark.parametrize("period", [30, 60, 17])
def test_pyotp_interop(algorithm: str, digits: int, period: int) -> None:
    for _ in range(3):
        s = pyotp.random_base32() if secrets.randbelow(2) else bitsec.totp_generate_secret()
        ref = pyotp.TOTP(s, digits=digits, digest=DIGESTS[algorithm], interval=period)
        at = 1_600_000_000 + secrets.randbelow(400_000_000)
        assert bitsec.totp_now(s, algorithm=algorithm, digits=digits, period=period, at=at) == ref.at(at)
        rt = bitsec.Runtime({"totp": {"algorithm": algorithm, "digits": digits, "period": period, "window": 1}})
        rt0 = bitsec.Runtime({"totp": {"algorithm": algorithm, "digits": digits, "period": period, "window": 0}})
        for offset in range(-2, 3):
            code = ref.at(at + offset * period)
            for window in (0, 1):
                expected = ref.verify(code, for_time=at, valid_window=window)
                got = bitsec.totp_check(s, code, algorithm=algorithm, digits=digits, period=period, window=window, at=at)
                assert bool(got) == expected, (offset, window)
                if expected:
                    assert got.step == at // period + offset
                stateful = (rt if window else rt0).totp_verify(s, code, user(), at=at)
                assert bool(stateful) == expected, (offset, window)
        wrong = f"{(int(ref.at(at)) + 1) % 10**digits:0{digits}d}"
        assert bitsec.totp_check(s, wrong, algorithm=algorithm, digits=digits, period=period, at=at).reason in ("wrong_code", "ok")
        rt.close()
        rt0.close()


def test_hotp_interop() -> None:
    for _ in range(20):
        s = pyotp.random_base32()
        c = secrets.randbelow(2**40)
        assert bitsec.hotp(s, c) == pyotp.HOTP(s).at(c)
        assert bitsec.hotp(s, c, algorithm="SHA512", digits=8) == pyotp.HOTP(s, digits=8, digest=hashlib.sha512).at(c)


def test_malformed_codes_are_decisions() -> None:
    s = bitsec.totp_generate_secret()
    rt = bitsec.Runtime({"totp": {}})
    for code in ["", "12345", "1234567", "12a456", " 123456", "123456\n", "١٢٣٤٥٦", "12.456", "-12345"]:
        assert bitsec.totp_check(s, code).reason == "malformed_code"
        d = rt.totp_verify(s, code, "mallory")
        assert not d and d.reason == "malformed_code"
    with pytest.raises(bitsec.TooLargeError):
        rt.totp_verify(s, "1" * 300, "mallory")


def test_text_no_utf_8_encodes_is_a_decision_or_a_bitsec_error(tmp_path: Path) -> None:
    # A str with a lone surrogate (JSON's \ud800 gives one) has no UTF-8 form: a code is
    # malformed (the decision, and its record, of any other malformed code), a user, secret,
    # sealed secret or stored hash an error of bitsec's own -- never UnicodeEncodeError, which
    # a caller catching BitsecError let through as a 500.
    audit_path = tmp_path / "audit.jsonl"
    rt = bitsec.Runtime(sealed_config(audit={"sinks": [{"type": "file", "path": str(audit_path)}]}))
    s, u = bitsec.totp_generate_secret(), user()
    sealed = rt.totp_seal_secret(s, u)
    batch = rt.backup_codes_generate(2)
    for code in ("\ud800", "12\udc0034", "123456\ud800"):
        assert bitsec.totp_check(s, code).reason == "malformed_code"
        assert bitsec.hotp_check(s, code, 0).reason == "malformed_code"
        assert rt.totp_verify(s, code, u).reason == "malformed_code"
        assert rt.totp_verify(s, code).reason == "malformed_code"
        assert rt.totp_verify_sealed(sealed, code, u).reason == "malformed_code"
        assert rt.backup_code_verify(u, code, batch.hashes).reason == "malformed_code"
    rt.audit_flush()
    events = [json.loads(line) for line in audit_path.read_text().splitlines() if line.strip()]
    assert [(e["subtype"], e["reason"]) for e in events if e.get("type") == "mfa"] == [
        ("totp_failed", "malformed_code")] * 12
    bad_user = "eve\ud800"
    for call in (lambda: rt.totp_verify(s, "123456", bad_user), lambda: rt.totp_seal_secret(s, bad_user),
                 lambda: rt.totp_verify_sealed(sealed, "123456", bad_user),
                 lambda: rt.backup_code_verify(bad_user, batch.codes[0], batch.hashes)):
        with pytest.raises(InvalidArgumentError, match="user is not valid UTF-8"):
            call()
    bad_secret = s[:-1] + "\ud800"
    for call in (lambda: rt.totp_verify(bad_secret, "123456", u), lambda: rt.totp_seal_secret(bad_secret, u),
                 lambda: bitsec.totp_check(bad_secret, "123456"), lambda: bitsec.totp_now(bad_secret),
                 lambda: bitsec.hotp(bad_secret, 0), lambda: rt.totp_now(bad_secret)):
        with pytest.raises(MalformedError, match="base32"):
            call()
    with pytest.raises(MalformedError):
        rt.totp_verify_sealed(sealed[:-1] + "\ud800", "123456", u)
    with pytest.raises(bitsec.BitsecError):
        rt.backup_code_verify(u, batch.codes[0], [batch.hashes[0][:-1] + "\ud800"])
    for call in (lambda: rt.totp_provisioning_uri(s, bad_user),
                 lambda: bitsec.totp_provisioning_uri(s, bad_user, "Bitcorp"),
                 lambda: bitsec.totp_provisioning_uri(s, "u", "Bit\udc00corp")):
        with pytest.raises(InvalidArgumentError):
            call()
    assert rt.totp_verify(s, rt.totp_now(s), u)  # the runtime still decides


def test_bad_secrets_are_errors_that_do_not_echo_them() -> None:
    rt = bitsec.Runtime({"totp": {}})
    for bad in ["NOT-BASE32-AT-ALL", "JBSWY3DPEHPK3PX1", "JBSWY3DPEHPK3PXP=", "A"]:
        with pytest.raises(MalformedError) as e:
            rt.totp_verify(bad, "123456", "u")
        assert bad not in str(e.value) and "base32" in str(e.value)
    with pytest.raises(InvalidArgumentError, match="shorter than the minimum"):
        rt.totp_verify("JBSWY3DPEHPK3", "123456", "u")  # 64 bits
    # 80 bits is the default minimum for verification (legacy 16-character secrets).
    assert rt.totp_verify("JBSWY3DPEHPK3PXP", "123456", user()).reason in ("wrong_code", "ok")
    with pytest.raises(InvalidArgumentError):
        bitsec.totp_generate_secret(96)
    assert len(bitsec.totp_generate_secret()) == 32
    assert len(bitsec.totp_generate_secret(256)) == 52
    # Lower case and padding are accepted.
    s = bitsec.totp_generate_secret(128)
    padded = s.lower() + "=" * (-len(s) % 8)
    assert bitsec.totp_now(padded, at=1_700_000_000) == bitsec.totp_now(s, at=1_700_000_000)


def test_replay_in_process_and_not_configured() -> None:
    rt = bitsec.Runtime({"totp": {}})
    s = bitsec.totp_generate_secret()
    code = pyotp.TOTP(s).now()
    u = user()
    first = rt.totp_verify(s, code, u)
    now = int(time.time()) // 30
    assert first and first.reason == "ok" and first.step in (now - 1, now, now + 1)
    again = rt.totp_verify(s, code, u)
    assert not again and again.reason == "replayed"
    # Without a user, the state is keyed by the secret.
    s2 = bitsec.totp_generate_secret()
    c2 = pyotp.TOTP(s2).now()
    assert rt.totp_verify(s2, c2)
    assert rt.totp_verify(s2, c2).reason == "replayed"
    with pytest.raises(NotConfiguredError):
        bitsec.Runtime({}).totp_verify(s, code, u)


def test_replay_across_two_runtimes_sharing_redis(redis_mode_config: dict) -> None:
    cfg = dict(redis_mode_config, totp={"state": "redis"})
    a, b = bitsec.Runtime(cfg), bitsec.Runtime(cfg)
    s = bitsec.totp_generate_secret()
    u = user()
    at = 1_750_000_000
    code = bitsec.totp_now(s, at=at)
    assert a.totp_verify(s, code, u, at=at)
    assert b.totp_verify(s, code, u, at=at).reason == "replayed"
    assert a.totp_verify(s, code, u, at=at).reason == "replayed"
    # The next step is accepted once, by whichever instance gets it first.
    nxt = bitsec.totp_now(s, at=at + 30)
    assert b.totp_verify(s, nxt, u, at=at + 30)
    assert a.totp_verify(s, nxt, u, at=at + 30).reason == "replayed"


def test_concurrent_threads_accept_a_code_once(redis_mode_config: dict) -> None:
    for cfg in ({"totp": {"throttle": {"max_failures": 100}}},
                dict(redis_mode_config, totp={"state": "redis", "throttle": {"max_failures": 100}})):
        rt = bitsec.Runtime(cfg)
        s = bitsec.totp_generate_secret()
        code = bitsec.totp_now(s, at=1_760_000_000)
        u = user()
        results: list[str] = []
        barrier = threading.Barrier(8)

        def worker() -> None:
            barrier.wait()
            results.append(rt.totp_verify(s, code, u, at=1_760_000_000).reason)

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(results) == ["ok"] + ["replayed"] * 7


@pytest.mark.parametrize("shared", [False, True])
def test_throttling(shared: bool, redis_config: dict) -> None:
    totp = {"throttle": {"max_failures": 5, "window_s": 300}}
    cfg = dict(redis_config, totp=dict(totp, state="redis")) if shared else {"totp": totp}
    rt = bitsec.Runtime(cfg)
    other = bitsec.Runtime(cfg)  # with Redis, a second instance sees the same count
    s = bitsec.totp_generate_secret()
    u = user()
    at = 1_770_000_000
    good = {bitsec.totp_now(s, at=at + k * 30) for k in (-1, 0, 1)}
    wrong = next(f"{n:06d}" for n in range(10**6) if f"{n:06d}" not in good)
    for i in range(5):
        assert rt.totp_verify(s, wrong, u, at=at + i).reason == "wrong_code"
    d = (other if shared else rt).totp_verify(s, bitsec.totp_now(s, at=at + 10), u, at=at + 10)
    assert not d and d.reason == "throttled" and d.retry_after == 290
    if not shared:
        assert other.totp_verify(s, bitsec.totp_now(s, at=at + 10), u, at=at + 10)  # separate processes' state
    # After the window, the right code is accepted and the count is reset.
    assert rt.totp_verify(s, bitsec.totp_now(s, at=at + 300), u, at=at + 300)
    assert rt.totp_verify(s, wrong, u, at=at + 301).reason in ("wrong_code", "ok")


def test_redis_outage_is_an_error_never_an_acceptance(fresh_redis) -> None:  # type: ignore[no-untyped-def]
    rt = bitsec.Runtime({"redis": {"port": fresh_redis.port, "command_timeout_ms": 300, "connect_timeout_ms": 300},
                         "totp": {"state": "redis"}})
    s = bitsec.totp_generate_secret()
    code = bitsec.totp_now(s)
    fresh_redis.stop()
    with pytest.raises(BackendUnavailableError):
        rt.totp_verify(s, code, user())


def test_backup_codes(redis_mode_config: dict) -> None:
    rt = bitsec.Runtime(dict(redis_mode_config, totp={"state": "redis", "backup_codes": {"count": 8, "iterations": 2000}}))
    peer = bitsec.Runtime(dict(redis_mode_config, totp={"state": "redis", "backup_codes": {"count": 8, "iterations": 2000}}))
    batch = rt.backup_codes_generate()
    assert len(batch.codes) == len(batch.hashes) == 8 and len(set(batch.codes)) == 8
    assert all(len(c) == 11 and c[5] == "-" for c in batch.codes)
    assert all(h.startswith("bc1$2000$") for h in batch.hashes)
    assert len(rt.backup_codes_generate(3).codes) == 3
    u = user()
    d = rt.backup_code_verify(u, batch.codes[5].upper().replace("-", " "), batch.hashes)
    assert d and d.index == 5
    assert peer.backup_code_verify(u, batch.codes[5], batch.hashes).reason == "replayed"
    stored = batch.hashes[:5] + batch.hashes[6:]
    assert rt.backup_code_verify(u, batch.codes[5], stored).reason == "wrong_code"
    assert rt.backup_code_verify(u, batch.codes[7], stored).index == 6
    assert rt.backup_code_verify(u, "nope", stored).reason == "malformed_code"
    with pytest.raises(MalformedError):
        rt.backup_code_verify(u, batch.codes[0], ["bc1$1$x$y"])
    assert rt.backup_code_verify(u, batch.codes[0], []).reason == "wrong_code"


def test_provisioning_uri_round_trips_through_pyotp() -> None:
    s = bitsec.totp_generate_secret()
    uri = bitsec.totp_provisioning_uri(s, "alice@bitcorp.example", "Bitcorp ERP")
    assert uri == (f"otpauth://totp/Bitcorp%20ERP:alice@bitcorp.example?secret={s}&issuer=Bitcorp%20ERP"
                   "&algorithm=SHA1&digits=6&period=30")
    parsed = pyotp.parse_uri(uri)
    assert parsed.issuer == "Bitcorp ERP" and parsed.name == "alice@bitcorp.example"
    assert parsed.at(1_700_000_000) == bitsec.totp_now(s, at=1_700_000_000)
    odd = bitsec.totp_provisioning_uri(s.lower(), "José & co/#?", "Bitcorp ERP", algorithm="SHA256", digits=8, period=60)
    p2 = pyotp.parse_uri(odd)
    assert p2.name == "José & co/#?" and p2.digits == 8 and p2.interval == 60
    assert p2.at(1_700_000_000) == bitsec.totp_now(s, algorithm="SHA256", digits=8, period=60, at=1_700_000_000)
    with pytest.raises(InvalidArgumentError):
        bitsec.totp_provisioning_uri(s, "a:b", "Bitcorp ERP")
    rt = bitsec.Runtime({"totp": {"issuer": "Bitcorp ERP", "digits": 8}})
    assert rt.totp_provisioning_uri(s, "bob").startswith("otpauth://totp/Bitcorp%20ERP:bob?secret=")
    assert "digits=8" in rt.totp_provisioning_uri(s, "bob")
    assert rt.totp_now(s, at=59) == bitsec.totp_now(s, digits=8, at=59)


def test_qr_png_decodes_as_png() -> None:
    import png  # pypng, part of the qr extra

    s = bitsec.totp_generate_secret()
    data = bitsec.totp_qr_png(bitsec.totp_provisioning_uri(s, "alice@bitcorp.example", "Bitcorp ERP"))
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    width, height, rows, info = png.Reader(bytes=data).read()
    assert width == height and width >= 21 * 10
    pixels = [list(r) for r in rows]
    assert len(pixels) == height
    flat = {v for r in pixels for v in r}
    assert len(flat) == 2  # black and white modules


def test_decision_object() -> None:
    d = bitsec.TOTPDecision("ok", 5)
    assert d and d.accepted and d == bitsec.TOTPDecision("ok", 5)
    n = bitsec.TOTPDecision("throttled", -1, 30)
    assert not n and "throttled" in repr(n)


# ---- sealed secrets (field encryption) ----

FIELD_KEY = bytes(range(32)).hex()


def sealed_config(totp: dict | None = None, **extra: object) -> dict:
    return dict({"allow_inline_secrets": True,
                 "fields": {"keys": [{"id": "k1", "secret": {"value": FIELD_KEY, "encoding": "hex"}}]},
                 "totp": {"issuer": "Bitcorp ERP", **(totp or {})}}, **extra)


def test_sealed_round_trip_and_context_binding() -> None:
    rt = bitsec.Runtime(sealed_config())
    s, u = bitsec.totp_generate_secret(), user()
    sealed = rt.totp_seal_secret(s.lower(), u)
    assert isinstance(sealed, str) and s not in sealed and len(sealed) <= 512
    assert rt.totp_seal_secret(s, u) != sealed  # randomised
    # The documented context gives the normalised secret back through the field API.
    assert rt.decrypt_field(sealed, bitsec.SEALED_SECRET_CONTEXT_PREFIX + u) == s.encode()
    at = 1_750_000_000
    d = rt.totp_verify_sealed(sealed, bitsec.totp_now(s, at=at), u, at=at)
    assert d and d.step == at // 30
    # Copied to another user's row: an error, never a decision.
    with pytest.raises(MalformedError, match="wrong_context"):
        rt.totp_verify_sealed(sealed, bitsec.totp_now(s, at=at + 30), user(), at=at + 30)
    tampered = sealed[:-4] + ("AAAA" if not sealed.endswith("AAAA") else "BBBB")
    with pytest.raises(MalformedError):
        rt.totp_verify_sealed(tampered, bitsec.totp_now(s, at=at + 30), u, at=at + 30)
    with pytest.raises(MalformedError):
        rt.totp_seal_secret("not base32!", u)
    with pytest.raises(InvalidArgumentError):
        rt.totp_seal_secret(s, "")
    # Malformed codes are decided before anything is opened.
    assert rt.totp_verify_sealed("garbage", "12", u).reason == "malformed_code"


def test_sealed_needs_the_fields_section() -> None:
    rt = bitsec.Runtime({"totp": {}})
    with pytest.raises(NotConfiguredError, match="fields section"):
        rt.totp_seal_secret(bitsec.totp_generate_secret(), "alice")
    with pytest.raises(NotConfiguredError, match="fields section"):
        rt.totp_verify_sealed("x", "123456", "alice")
    with pytest.raises(NotConfiguredError, match="fields section"):
        rt.totp_enroll("alice")


def test_enroll_then_verify_with_pyotp() -> None:
    rt = bitsec.Runtime(sealed_config())
    u = user()
    e = rt.totp_enroll(u, "alice@bitcorp.example")
    assert isinstance(e, bitsec.TOTPEnrollment)
    assert e.uri.startswith("otpauth://totp/Bitcorp%20ERP:alice@bitcorp.example?secret=")
    ref = pyotp.parse_uri(e.uri)
    assert len(ref.secret) == 32  # 160 bits
    at = int(time.time())
    assert rt.totp_verify_sealed(e.sealed, ref.at(at), u, at=at)
    assert rt.totp_verify_sealed(e.sealed, ref.at(at), u, at=at).reason == "replayed"


@pytest.mark.parametrize("shared", [False, True])
def test_sealed_path_shares_replay_throttle_and_audit(shared: bool, redis_config: dict, tmp_path: Path) -> None:
    extra = dict(redis_config) if shared else {}
    totp = {"state": "redis"} if shared else {}
    audit_path = tmp_path / "audit.jsonl"
    rt = bitsec.Runtime(sealed_config(dict(totp, throttle={"max_failures": 3, "window_s": 100}),
                                      audit={"sinks": [{"type": "file", "path": str(audit_path)}]}, **extra))
    s, u = bitsec.totp_generate_secret(), user()
    sealed = rt.totp_seal_secret(s, u)
    at = 1_770_000_000
    code = bitsec.totp_now(s, at=at)
    assert rt.totp_verify_sealed(sealed, code, u, at=at)
    assert rt.totp_verify_sealed(sealed, code, u, at=at).reason == "replayed"
    assert rt.totp_verify(s, code, u, at=at).reason == "replayed"  # one state per user, sealed or not
    wrong = "000000" if "000000" not in {bitsec.totp_now(s, at=at + 1 + k * 30) for k in (-1, 0, 1)} else "111111"
    assert rt.totp_verify_sealed(sealed, wrong, u, at=at + 1).reason == "wrong_code"
    d = rt.totp_verify_sealed(sealed, bitsec.totp_now(s, at=at + 30), u, at=at + 30)
    assert not d and d.reason == "throttled" and d.retry_after == 70
    # An unopenable sealed secret is an error and is not counted.
    with pytest.raises(MalformedError):
        rt.totp_verify_sealed("garbage", bitsec.totp_now(s, at=at + 30), u, at=at + 30)
    assert rt.totp_verify_sealed(sealed, bitsec.totp_now(s, at=at + 100), u, at=at + 100)
    rt.close()
    events = [json.loads(line) for line in audit_path.read_text().splitlines() if line.strip()]
    mfa = [(e.get("subtype"), e.get("reason")) for e in events if e.get("type") == "mfa"]
    assert mfa == [("totp_replayed", "replayed"), ("totp_replayed", "replayed"), ("totp_failed", "wrong_code"),
                   ("throttled", "throttled")]
