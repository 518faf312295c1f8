"""Passwords: scrypt PHC hashes (interoperable with hashlib.scrypt), verification and the dummy
verification, needs-rehash, NFKC normalisation and the NIST SP 800-63B-4 policy."""
from __future__ import annotations

import base64
import hashlib
import statistics
import time
import unicodedata
from pathlib import Path

import pytest

import bitsec
from bitsec import MalformedError, NotConfiguredError, TooLargeError, UnsupportedError

FAST = {"passwords": {"ln": 10, "r": 8, "p": 1}}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


@pytest.fixture(scope="module")
def rt():
    with bitsec.Runtime(FAST) as r:
        yield r


def test_hash_is_phc_and_matches_hashlib(rt: bitsec.Runtime) -> None:
    h = rt.password_hash("correct horse battery staple")
    scheme, params, salt, digest = h.split("$")[1:]
    assert scheme == "scrypt" and params == "ln=10,r=8,p=1"
    assert "=" not in salt + digest and len(unb64(salt)) == 16 and len(unb64(digest)) == 32
    # The same derivation as Python's hashlib.scrypt with the parameters of the string.
    assert hashlib.scrypt(b"correct horse battery staple", salt=unb64(salt), n=1 << 10, r=8, p=1, dklen=32) == unb64(digest)
    assert rt.password_verify("correct horse battery staple", h)
    assert not rt.password_verify("correct horse battery stapl", h)
    assert rt.password_hash("correct horse battery staple") != h  # fresh salt


def test_hashlib_phc_verifies_and_asks_for_rehash(rt: bitsec.Runtime) -> None:
    salt = b"0123456789abcdef"
    d = hashlib.scrypt(b"an older hash", salt=salt, n=1 << 11, r=8, p=1, dklen=32)
    stored = f"$scrypt$ln=11,r=8,p=1${b64(salt)}${b64(d)}"
    v = rt.password_verify("an older hash", stored)
    assert v.match and v.needs_rehash
    assert rt.password_needs_rehash(stored)
    assert not rt.password_verify("another", stored).needs_rehash  # only after a match
    assert not rt.password_needs_rehash(rt.password_hash("x"))
    assert rt.password_needs_rehash("scrypt$16384$8$1$c2FsdA==$aGFzaA==")  # the old application format
    assert rt.password_needs_rehash("")


def test_dummy_verify_never_matches(rt: bitsec.Runtime) -> None:
    assert not rt.password_verify("", None)
    assert not rt.password_verify("anything", None).match
    assert rt.password_dummy_verify("anything") is None


def test_errors_are_not_decisions(rt: bitsec.Runtime) -> None:
    with pytest.raises(MalformedError):
        rt.password_verify("x", "$scrypt$ln=10,r=8,p=1$!!$??")
    with pytest.raises(UnsupportedError):
        rt.password_verify("x", "$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA")
    with pytest.raises(TooLargeError):  # 2^24 * 8 * 128 bytes = 16 GiB: refused, never allocated
        rt.password_verify("x", f"$scrypt$ln=24,r=8,p=1${b64(bytes(16))}${b64(bytes(32))}")
    with pytest.raises(TooLargeError):
        rt.password_hash("x" * 5000)
    with bitsec.Runtime({}) as none, pytest.raises(NotConfiguredError):
        none.password_check("x")


def test_nfkc_normalisation_before_hashing(rt: bitsec.Runtime) -> None:
    composed, decomposed = "caf\u00e9 au lait, s'il vous pla\u00eet", "cafe\u0301 au lait, s'il vous plai\u0302t"
    assert composed != decomposed
    assert rt.password_verify(decomposed, rt.password_hash(composed))
    # Compatibility forms: the ligature "ﬁ" and fullwidth letters are their plain letters.
    assert rt.password_verify("confidential ＡＢＣ", rt.password_hash("con\ufb01dential ABC"))
    assert bitsec.normalize_password(b"e\xcc\x81") == "\u00e9".encode()


CASES = [
    "a" * 64,
    "\U0001F512" * 15,                      # 15 emoji, 60 bytes
    "\U0001F469\u200d\U0001F4BB" * 5,        # ZWJ sequences: 3 code points each
    "e\u0301" * 15,                         # decomposed: NFKC composes to 15 code points
    "\u00e9" * 15,
    "\ufb01" * 8,                           # ligature: NFKC gives 16 code points
    "\u1100\u1161" * 8,                     # conjoining jamo: compose to 8 syllables
    "\U0001F1EB\U0001F1F7" * 8,             # flags: 2 regional indicators each
    "\u0915\u094d\u0937" * 5,               # Devanagari conjunct: 3 code points each
    "\uff21" * 20,                          # fullwidth A
]


@pytest.mark.parametrize("text", CASES)
def test_policy_counts_the_same_in_python_and_native(rt: bitsec.Runtime, text: str) -> None:
    nfkc = unicodedata.normalize("NFKC", text)
    d = rt.password_check(text)
    assert d.length == len(nfkc)
    assert ("too_short" in d.reasons) == (len(nfkc) < 15)
    # Native, given the NFKC bytes directly, counts the same (no second normalisation in Python).
    assert rt.password_check(nfkc.encode()).length == len(nfkc)


def test_policy_lengths_and_blocklist(rt: bitsec.Runtime) -> None:
    assert rt.password_check("x" * 64) and rt.password_check("x" * 128)
    assert rt.password_check("x" * 129).reasons == ("too_long",)
    assert rt.password_check("fourteen chars").reasons == ("too_short",)
    assert rt.password_check("eight ch", mfa=True)
    assert rt.password_check("password1", mfa=True).reasons == ("blocklisted",)
    assert rt.password_check("PASSWORD1", mfa=True).reasons == ("blocklisted",)
    assert rt.password_check("password").reasons == ("too_short", "blocklisted")
    assert rt.password_check("purple monkey dishwasher")  # no composition rules


def test_blocklist_file(tmp_path: Path) -> None:
    f = tmp_path / "breached.txt"
    f.write_text("our-service-name-2026\nCorrectHorseBatteryStaple\n")
    cfg = {"passwords": {"ln": 10, "blocklist_file": str(f)}}
    with bitsec.Runtime(cfg) as r:
        assert r.password_check("correcthorsebatterystaple").reasons == ("blocklisted",)
        assert r.password_check("our-service-name-2026").reasons == ("blocklisted",)
        assert r.password_check("password1", mfa=True).reasons == ("blocklisted",)  # built-in list too
        assert r.describe()["sections"]["passwords"]["blocklist_entries"] > 10_000


def test_timing_existing_vs_unknown_users() -> None:
    """Measured at the default parameters and printed, not asserted: a login for an unknown
    user (dummy verification) should cost what a wrong password for a known one costs."""
    with bitsec.Runtime({"passwords": {}}) as r:
        stored = r.password_hash("the real password of alice")
        known, unknown = [], []
        for _ in range(5):
            t = time.perf_counter()
            assert not r.password_verify("a wrong guess", stored)
            known.append(time.perf_counter() - t)
            t = time.perf_counter()
            assert not r.password_verify("a wrong guess", None)
            unknown.append(time.perf_counter() - t)
        print(f"\npassword verify at ln=17,r=8,p=1: existing user {statistics.median(known) * 1000:.1f} ms, "
              f"unknown user (dummy) {statistics.median(unknown) * 1000:.1f} ms (median of 5)")
