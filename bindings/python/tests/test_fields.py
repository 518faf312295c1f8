"""Field encryption through the Python binding: format, context binding, tampering, rotation,
deterministic mode, limits, concurrency during reloads, and interop with `cryptography`."""
from __future__ import annotations

import base64
import hashlib
import os
import re
import threading

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, AESSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

import bitsec
from bitsec import (
    FieldDecryptError,
    FieldMalformedError,
    FieldRetiredKeyError,
    FieldTamperedError,
    FieldUnknownKeyError,
    FieldWrongContextError,
)

K1 = bytes(range(32))
K2 = bytes(range(100, 132))
MASTER = bytes(range(200, 240))


def key(id_: str, material: bytes, **extra: object) -> dict:
    return {"id": id_, "secret": {"value": material.hex(), "encoding": "hex"}, **extra}


def config(keys: list[dict], primary: str | None = None, **extra: object) -> dict:
    section: dict = {"keys": keys, **extra}
    if primary:
        section["primary"] = primary
    return {"allow_inline_secrets": True, "fields": section}


@pytest.fixture()
def rt():
    with bitsec.Runtime(config([key("k1", K1)], deterministic_contexts=["equipment_records.serial_number*"])) as r:
        yield r


def subkey(material: bytes, purpose: str, key_id: str, length: int) -> bytes:
    """The documented derivation: HKDF-SHA256(material, salt "bitsec-fields-v1", purpose 0x00 key id)."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=b"bitsec-fields-v1",
                info=purpose.encode() + b"\x00" + key_id.encode()).derive(material)


def context_check(check_key: bytes, context: bytes) -> bytes:
    digest = hashlib.sha256(context).digest()[:16]
    enc = Cipher(algorithms.AES(check_key), modes.ECB()).encryptor()
    return (enc.update(digest) + enc.finalize())[:4]


def unb64(token: str) -> bytes:
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


# ---- round trips and format --------------------------------------------------------------

def test_round_trip_text_and_binary(rt: bitsec.Runtime) -> None:
    ctx = bitsec.field_context("equipment_records.notes", 42, "tenant-7")
    assert ctx == "equipment_records.notes|42|tenant-7"
    tok = rt.encrypt_field("défaut: fissure", context=ctx)
    assert isinstance(tok, str) and "=" not in tok and "+" not in tok and "/" not in tok
    assert rt.decrypt_field(tok, context=ctx) == "défaut: fissure".encode()
    b = rt.encrypt_field(b"\x00\x01binary\x00", context=ctx, binary=True)
    assert isinstance(b, bytes) and b[0] == 1
    assert rt.decrypt_field(b, context=ctx) == b"\x00\x01binary\x00"
    # The text form is the base64url of a binary token; either form decrypts.
    assert rt.decrypt_field(base64.urlsafe_b64encode(b).rstrip(b"=").decode(), ctx) == b"\x00\x01binary\x00"
    # Randomised: a fresh nonce each time.
    assert rt.encrypt_field(b"same", ctx) != rt.encrypt_field(b"same", ctx)
    assert bitsec.field_key_id(tok) == "k1" and bitsec.field_key_id(b) == "k1"


def test_empty_plaintext_and_empty_context(rt: bitsec.Runtime) -> None:
    for det in (False, True):
        ctx = "equipment_records.serial_number" if det else ""
        tok = rt.encrypt_field(b"", ctx, deterministic=det)
        assert rt.decrypt_field(tok, ctx) == b""


def test_sizes_match_the_bound(rt: bitsec.Runtime) -> None:
    for n in (0, 1, 2, 3, 31, 32, 1024, 4097):
        for det in (False, True):
            for binary in (False, True):
                ctx = "equipment_records.serial_number"
                tok = rt.encrypt_field(os.urandom(n), ctx, deterministic=det, binary=binary)
                raw = tok if binary else unb64(tok)
                # version, id length, "k1", check; then nonce+tag (28) or SIV+pad (17)
                assert len(raw) == 2 + 2 + 4 + n + (17 if det else 28)
                assert len(tok) <= bitsec.field_bound(n, deterministic=det, binary=binary)
    assert bitsec.field_bound(bitsec.FIELD_MAX_PLAINTEXT + 1) == 0


def test_maximum_size(rt: bitsec.Runtime) -> None:
    big = os.urandom(bitsec.FIELD_MAX_PLAINTEXT)
    tok = rt.encrypt_field(big, "c")
    assert rt.decrypt_field(tok, "c") == big
    with pytest.raises(bitsec.TooLargeError):
        rt.encrypt_field(big + b"x", "c")
    with pytest.raises(bitsec.TooLargeError):
        rt.encrypt_field(b"x", "c" * (bitsec.FIELD_MAX_CONTEXT + 1))
    with pytest.raises(bitsec.TooLargeError):
        rt.decrypt_field("A" * (bitsec.fields.FIELD_MAX_TOKEN + 1), "c")


def test_configured_maximum() -> None:
    with bitsec.Runtime(config([key("k1", K1)], max_plaintext_bytes=16)) as r:
        r.encrypt_field(b"x" * 16, "c")
        with pytest.raises(bitsec.TooLargeError, match="max_plaintext_bytes"):
            r.encrypt_field(b"x" * 17, "c")


# ---- failures are decisions ---------------------------------------------------------------

def test_wrong_context_fails(rt: bitsec.Runtime) -> None:
    tok = rt.encrypt_field(b"SN-0042", "equipment_records.serial_number|1|t1")
    for other in ("equipment_records.serial_number|2|t1", "equipment_records.serial_number|1|t2",
                  "equipment_records.cost|1|t1", ""):
        with pytest.raises(FieldWrongContextError) as e:
            rt.decrypt_field(tok, other)
        assert e.value.reason == "wrong_context"
        assert "SN-0042" not in str(e.value)


@pytest.mark.parametrize("det", [False, True])
def test_every_single_bit_flip_fails(rt: bitsec.Runtime, det: bool) -> None:
    ctx = "equipment_records.serial_number"
    tok = rt.encrypt_field(b"serial 123", ctx, deterministic=det, binary=True)
    for i in range(len(tok) * 8):
        bad = bytearray(tok)
        bad[i // 8] ^= 1 << (i % 8)
        with pytest.raises(FieldDecryptError) as e:
            rt.decrypt_field(bytes(bad), ctx)
        assert e.value.reason in {"tampered", "wrong_context", "unknown_key", "malformed"}
    # A flipped ciphertext or tag byte is "tampered" (the context check still matches).
    bad = bytearray(tok)
    bad[-1] ^= 0x80
    with pytest.raises(FieldTamperedError):
        rt.decrypt_field(bytes(bad), ctx)


def test_text_form_changes_fail(rt: bitsec.Runtime) -> None:
    tok = rt.encrypt_field(b"value", "c")
    for i in range(len(tok)):
        c = "B" if tok[i] != "B" else "C"
        with pytest.raises(FieldDecryptError):
            rt.decrypt_field(tok[:i] + c + tok[i + 1:], "c")
    for bad in ("", "A", tok[:-1], tok + "A", tok + "=", "+" + tok[1:], "é" * 10, tok[:10]):
        with pytest.raises(FieldDecryptError):
            rt.decrypt_field(bad, "c")


def test_malformed_inputs(rt: bitsec.Runtime) -> None:
    for bad in (b"", b"\x01", b"\x01\x00", b"\x03\x02k1" + b"\x00" * 40, b"\x01\x21" + b"a" * 80, b"\x01\x02k1\x00"):
        with pytest.raises(FieldMalformedError):
            rt.decrypt_field(bad, "c")


def test_unknown_key(rt: bitsec.Runtime) -> None:
    with bitsec.Runtime(config([key("other", K2)])) as other:
        tok = other.encrypt_field(b"x", "c")
    with pytest.raises(FieldUnknownKeyError):
        rt.decrypt_field(tok, "c")


def test_not_configured_and_bad_arguments(rt: bitsec.Runtime) -> None:
    with bitsec.Runtime({}) as bare:
        with pytest.raises(bitsec.NotConfiguredError):
            bare.encrypt_field(b"x", "c")
    with pytest.raises(TypeError):
        rt.encrypt_field(12, "c")  # type: ignore[arg-type]
    with pytest.raises(bitsec.InvalidArgumentError, match="deterministic"):
        rt.encrypt_field(b"x", "equipment_records.cost", deterministic=True)


# ---- keyring: rotation, rewrap, retirement, master derivation -------------------------------

def test_rotation_rewrap_and_retirement() -> None:
    with bitsec.Runtime(config([key("2025", K1)])) as r:
        ctx = "equipment_records.cost|7"
        old = r.encrypt_field(b"1250.00", ctx)
        assert bitsec.field_key_id(old) == "2025"
        # Rotation: a new primary; the old key still decrypts.
        r.fields_reload({"keys": [key("2026", K2), key("2025", K1)], "primary": "2026"})
        assert r.decrypt_field(old, ctx) == b"1250.00"
        new = r.encrypt_field(b"99", ctx)
        assert bitsec.field_key_id(new) == "2026"
        # Rewrap moves the value under the primary; a current token comes back unchanged.
        moved = r.rewrap_field(old, ctx)
        assert bitsec.field_key_id(moved) == "2026" and r.decrypt_field(moved, ctx) == b"1250.00"
        assert r.rewrap_field(moved, ctx) == moved
        assert r.rewrap_field(moved, ctx, binary=True)[0] == 1
        with pytest.raises(FieldWrongContextError):
            r.rewrap_field(old, "equipment_records.cost|8")
        # Retire the old key: its tokens are refused with a clear reason.
        r.fields_reload({"keys": [key("2026", K2), key("2025", K1, status="retired")], "primary": "2026"})
        with pytest.raises(FieldRetiredKeyError) as e:
            r.decrypt_field(old, ctx)
        assert e.value.reason == "retired_key"
        with pytest.raises(FieldRetiredKeyError):
            r.rewrap_field(old, ctx)
        assert r.decrypt_field(moved, ctx) == b"1250.00"
        d = r.describe()["sections"]["fields"]
        assert d["primary"] == "2026" and {k["id"]: k["status"] for k in d["keys"]} == {"2026": "active", "2025": "retired"}
        assert K1.hex() not in str(d)


def test_failed_reload_keeps_the_keyring() -> None:
    with bitsec.Runtime(config([key("k1", K1)])) as r:
        tok = r.encrypt_field(b"v", "c")
        for bad, fragment in (({"keys": [key("k1", K1)], "bogus": 1}, "unknown field fields.bogus"),
                              ({"keys": [key("k1", K1, status="retired")]}, "retired"),
                              ({"keys": [key("k1", b"short")]}, "at least 32 bytes"),
                              ({"keys": [key("k 1", K1)]}, "fields.keys[0].id"),
                              ({"keys": [key("a", K1), key("a", K2)], "primary": "a"}, "duplicate"),
                              ({"keys": [key("a", K1), key("b", K2)]}, "primary is required"),
                              ("{not json", "fields")):
            with pytest.raises(bitsec.ConfigError, match=re.escape(fragment)):
                r.fields_reload(bad)
        assert r.decrypt_field(tok, "c") == b"v"


def test_inline_secrets_are_refused_by_default() -> None:
    cfg = config([key("k1", K1)])
    del cfg["allow_inline_secrets"]
    with pytest.raises(bitsec.ConfigError, match="inline secrets are refused"):
        bitsec.Runtime(cfg)


def test_key_material_from_file_and_env(tmp_path, monkeypatch) -> None:
    p = tmp_path / "k1.key"
    p.write_bytes(K1)
    monkeypatch.setenv("BITSEC_TEST_FIELD_KEY", base64.b64encode(K2).decode())
    cfg = {"fields": {"keys": [{"id": "f", "secret": {"file": str(p)}},
                               {"id": "e", "secret": {"env": "BITSEC_TEST_FIELD_KEY", "encoding": "base64"}}],
                      "primary": "e"}}
    with bitsec.Runtime(cfg) as r, bitsec.Runtime(config([key("f", K1)])) as same:
        assert r.decrypt_field(same.encrypt_field(b"x", "c"), "c") == b"x"
        assert bitsec.field_key_id(r.encrypt_field(b"x", "c")) == "e"


def test_master_key_derivation_is_stable_across_processes() -> None:
    section = {"master": {"value": MASTER.hex(), "encoding": "hex"},
               "keys": [{"id": "m1", "derive_from_master": True}, {"id": "m2", "derive_from_master": True}],
               "primary": "m1"}
    with bitsec.Runtime({"allow_inline_secrets": True, "fields": section}) as a:
        tok = a.encrypt_field(b"persisted", "c")
    # Another runtime (another process tomorrow) derives the same keys: no random salt.
    with bitsec.Runtime({"allow_inline_secrets": True, "fields": section}) as b:
        assert b.decrypt_field(tok, "c") == b"persisted"
    # The documented derivation reproduces the key (AESGCM decrypts it).
    material = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"bitsec-fields-v1", info=b"key\x00m1").derive(MASTER)
    raw = unb64(tok)
    header = raw[:8]
    aes = AESGCM(subkey(material, "aead", "m1", 32))
    assert aes.decrypt(raw[8:20], raw[20:], header + b"c") == b"persisted"
    with pytest.raises(bitsec.ConfigError, match="needs fields.master"):
        bitsec.Runtime(config([{"id": "m1", "derive_from_master": True}]))


# ---- interop with cryptography ----------------------------------------------------------------

def test_cryptography_aesgcm_decrypts_the_documented_layout(rt: bitsec.Runtime) -> None:
    ctx = b"equipment_records.serial_number|42|tenant-7"
    for pt in (b"", b"SN-2024-000042", os.urandom(1000)):
        raw = unb64(rt.encrypt_field(pt, ctx))
        assert raw[0] == 0x01
        L = raw[1]
        key_id = raw[2:2 + L].decode()
        header = raw[:6 + L]
        check = raw[2 + L:6 + L]
        nonce = raw[6 + L:18 + L]
        body = raw[18 + L:]  # ciphertext || tag, as AESGCM expects
        aes = AESGCM(subkey(K1, "aead", key_id, 32))
        assert aes.decrypt(nonce, body, header + ctx) == pt
        # The context check is the documented AES-256(check subkey, SHA-256(context)[:16])[:4].
        assert context_check(subkey(K1, "context-check", key_id, 32), ctx) == check
    # And the other way: a token assembled by cryptography decrypts in bitsec.
    nonce = os.urandom(12)
    header = b"\x01\x02k1" + check
    aes = AESGCM(subkey(K1, "aead", "k1", 32))
    raw = header + nonce + aes.encrypt(nonce, b"from python", header + ctx)
    assert rt.decrypt_field(raw, ctx) == b"from python"


def test_deterministic_mode_is_aes_siv(rt: bitsec.Runtime) -> None:
    ctx = "equipment_records.serial_number|tenant-7"
    a = rt.encrypt_field("SN-1", ctx, deterministic=True)
    assert a == rt.encrypt_field("SN-1", ctx, deterministic=True)  # searchable by equality
    assert a != rt.encrypt_field("SN-2", ctx, deterministic=True)
    assert a != rt.encrypt_field("SN-1", "equipment_records.serial_number|tenant-8", deterministic=True)
    assert rt.decrypt_field(a, ctx) == b"SN-1"
    with pytest.raises(FieldWrongContextError):
        rt.decrypt_field(a, "equipment_records.serial_number|tenant-8")
    raw = unb64(a)
    assert raw[0] == 0x02
    header = raw[:8]
    siv = AESSIV(subkey(K1, "siv", "k1", 64))
    assert siv.decrypt(raw[8:], [header, ctx.encode()]) == b"\x00SN-1"


# ---- concurrency ------------------------------------------------------------------------------

def test_eight_threads_during_key_reloads() -> None:
    with bitsec.Runtime(config([key("k1", K1), key("k2", K2)], primary="k1")) as r:
        seed = [r.encrypt_field(f"v{i}".encode(), f"t.c|{i}") for i in range(16)]
        errors: list[BaseException] = []
        stop = threading.Event()

        def worker(n: int) -> None:
            try:
                for i in range(400):
                    ctx = f"t.c|{n}|{i}"
                    tok = r.encrypt_field(f"{n}:{i}".encode(), ctx)
                    assert r.decrypt_field(tok, ctx) == f"{n}:{i}".encode()
                    j = i % 16
                    assert r.decrypt_field(seed[j], f"t.c|{j}") == f"v{j}".encode()
            except BaseException as e:  # noqa: BLE001
                errors.append(e)

        def reloader() -> None:
            k = 0
            while not stop.is_set():
                primary = "k1" if k % 2 else "k2"
                r.fields_reload({"keys": [key("k1", K1), key("k2", K2)], "primary": primary})
                k += 1

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
        rl = threading.Thread(target=reloader)
        rl.start()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stop.set()
        rl.join()
        assert not errors, errors[:3]


def test_fast_paths_pass_exactly_the_declared_types() -> None:
    # encrypt_field/decrypt_field call the C functions without ctypes' conversion; the objects
    # they pass must be of exactly the declared argtypes (bytes standing for c_char_p).
    import ctypes

    from bitsec import _native
    from bitsec.fields import FAST_ARGTYPES
    for name, fast in FAST_ARGTYPES.items():
        restype, declared = _native.PROTOTYPES[name]
        assert len(fast) == len(declared)
        for f, d in zip(fast, declared):
            if f == "byref":
                assert d._type_ in (ctypes.c_size_t, ctypes.c_int32)  # POINTER(...), passed as byref
            elif f == "buffer":
                assert d is ctypes.c_char_p  # an output buffer: its address, as a c_void_p
            elif d is ctypes.c_void_p:
                assert f is ctypes.c_void_p
            else:
                assert f is d, (name, f, d)


def test_reason_names_and_key_ids(rt: bitsec.Runtime) -> None:
    from bitsec.fields import reason_name
    assert [reason_name(i) for i in range(8)] == ["ok", "malformed", "tampered", "wrong_context", "unknown_key",
                                                   "retired_key", "expired", "not_yet_valid"]
    assert reason_name(42) == "unknown"
    for cls in (FieldMalformedError, FieldTamperedError, FieldWrongContextError, FieldUnknownKeyError, FieldRetiredKeyError):
        assert issubclass(cls, FieldDecryptError) and issubclass(cls, bitsec.BitsecError) and issubclass(cls, ValueError)
        assert reason_name(cls.reason_code) == cls.reason
    with pytest.raises(FieldMalformedError):
        bitsec.field_key_id("!!!")
    assert bitsec.field_context("a|b", "c\\d", None) == "a\\|b|c\\\\d|"
    # A closed runtime answers ClosedError, not a crash.
    r = bitsec.Runtime(config([key("k1", K1)]))
    tok = r.encrypt_field(b"x", "c")
    r.close()
    with pytest.raises(bitsec.ClosedError):
        r.decrypt_field(tok, "c")
    with pytest.raises(bitsec.ClosedError):
        r.encrypt_field(b"x", "c")


# ---- nothing a caller passes crashes the process --------------------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_FUZZ_RT = bitsec.Runtime(config([key("k1", K1)], deterministic_contexts=["d"],
                                 fernet={"keys": [{"value": base64.urlsafe_b64encode(K2).decode(), "encoding": "base64url"}]}))
_GOOD = _FUZZ_RT.encrypt_field(b"fuzz", "c", binary=True)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.binary(max_size=64))
def test_random_tokens_are_decisions(token: bytes, ctx: bytes) -> None:
    for t in (token, b"\x01" + token, b"\x02\x02k1" + token, _GOOD[: len(token) % (len(_GOOD) + 1)] + token[:3]):
        try:
            _FUZZ_RT.decrypt_field(t, ctx)
        except FieldDecryptError:
            pass
        try:
            _FUZZ_RT.fernet_decrypt(t)
        except FieldDecryptError:
            pass


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=len(_GOOD) * 8 - 1), st.binary(max_size=8))
def test_mutated_tokens_never_decrypt(bit: int, tail: bytes) -> None:
    bad = bytearray(_GOOD)
    bad[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(FieldDecryptError):
        _FUZZ_RT.decrypt_field(bytes(bad) + tail, "c")


def test_constants_match_the_header(repo_root) -> None:
    text = (repo_root / "include" / "bitsec.h").read_text()
    defs = {m[1]: m[2].strip() for m in re.finditer(r"#define (BITSEC_(?:FIELD|FERNET)_\w+) ([^/\n]+)", text)}
    from bitsec import fields as F
    assert int(defs["BITSEC_FIELD_BINARY"].rstrip("u")) == F.FIELD_BINARY
    assert int(defs["BITSEC_FIELD_DETERMINISTIC"].rstrip("u")) == F.FIELD_DETERMINISTIC
    assert eval(defs["BITSEC_FIELD_MAX_PLAINTEXT"]) == F.FIELD_MAX_PLAINTEXT
    assert int(defs["BITSEC_FIELD_MAX_CONTEXT"]) == F.FIELD_MAX_CONTEXT
    assert int(defs["BITSEC_FIELD_MAX_KEY_ID"]) == F.FIELD_MAX_KEY_ID
    assert int(defs["BITSEC_FIELD_MAX_TOKEN"]) == F.FIELD_MAX_TOKEN == bitsec.field_bound(F.FIELD_MAX_PLAINTEXT)
    assert int(defs["BITSEC_FERNET_MAX_TOKEN"]) == F.FERNET_MAX_TOKEN == bitsec.fernet_bound(F.FIELD_MAX_PLAINTEXT)
    for cls in F._BY_REASON.values():
        assert int(defs[f"BITSEC_FIELD_REASON_{cls.reason.upper()}"]) == cls.reason_code
