"""The ``bitsec`` command line, run as a user runs it (a subprocess of ``python -m bitsec``, and
the installed console script): exit statuses, outputs, file modes, no secrets on stdout."""
from __future__ import annotations

import base64
import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import bitsec
from bitsec import cli


def run(*args: str, stdin: str | bytes | None = None, env: dict[str, str] | None = None,
        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    full = dict(os.environ)
    full.setdefault("BITSEC_LIBRARY", bitsec.library_path())
    full.update(env or {})
    data = stdin.decode() if isinstance(stdin, bytes) else stdin
    return subprocess.run([sys.executable, "-m", "bitsec", *args], input=data, capture_output=True, text=True,
                          env=full, cwd=cwd, timeout=120)


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def write_config(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(json.dumps(doc))
    return path


# ---- --version, --help ------------------------------------------------------------------------

def test_version() -> None:
    r = run("--version")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"bitsec {bitsec.__version__} (library {bitsec.library_version()}, ABI 1,")
    r = run("--version", "--json")
    assert json.loads(r.stdout)["abi"] == 1


def test_console_script_is_installed() -> None:
    script = shutil.which("bitsec", path=os.path.dirname(sys.executable))
    assert script, "the bitsec console script is not installed next to the interpreter"
    r = subprocess.run([script, "--version"], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "BITSEC_LIBRARY": bitsec.library_path()})
    assert r.returncode == 0 and r.stdout.startswith("bitsec "), r.stderr


def _commands(parser: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    import argparse

    out = [prefix]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out += _commands(sub, prefix + (name,))
    return out


COMMANDS = _commands(cli.build_parser())


def test_every_command_is_there() -> None:
    want = {("config", "check"), ("keys", "generate"), ("jwks",), ("token", "sign"), ("token", "verify"),
            ("token", "inspect"), ("totp", "uri"), ("totp", "qr"), ("totp", "code"), ("field", "encrypt"),
            ("field", "decrypt"), ("field", "rewrap"), ("audit", "verify"), ("audit", "tail")}
    assert want <= set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "bitsec")
def test_help_on_every_command(command: tuple[str, ...]) -> None:
    r = run(*command, "--help")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage: bitsec")


def test_cli_reference_matches_help(repo_root: Path) -> None:
    """docs/cli.md is generated from the parser (tools/gen_cli_docs.py): it must be current."""
    r = subprocess.run([sys.executable, str(repo_root / "tools" / "gen_cli_docs.py"), "--check"], capture_output=True,
                       text=True, timeout=60, env={**os.environ, "BITSEC_LIBRARY": bitsec.library_path()})
    assert r.returncode == 0, r.stdout + r.stderr


def test_no_command_is_a_usage_error() -> None:
    r = run()
    assert r.returncode == 2
    assert "usage: bitsec" in r.stderr


# ---- config check -----------------------------------------------------------------------------

def test_config_check(tmp_path: Path) -> None:
    good = write_config(tmp_path / "good.json", {"totp": {"issuer": "ACME"}})
    r = run("config", "check", str(good))
    assert r.returncode == 0, r.stderr
    assert "valid" in r.stdout and "totp" in r.stdout
    bad = write_config(tmp_path / "bad.json", {"redis": {"hots": "x"}})
    r = run("config", "check", str(bad))
    assert r.returncode == 1
    assert "unknown field redis.hots" in r.stderr
    r = run("config", "check", str(bad), "--json")
    assert r.returncode == 1
    doc = json.loads(r.stdout)
    assert doc["valid"] is False and "redis.hots" in doc["error"]
    nested = write_config(tmp_path / "nested.json", {"totp": {"digits": 12}})
    r = run("config", "check", str(nested))
    assert r.returncode == 1 and "totp.digits" in r.stderr
    r = run("config", "check", str(tmp_path / "missing.json"))
    assert r.returncode == 2 and "missing.json" in r.stderr


# ---- keys generate, jwks, token ---------------------------------------------------------------

@pytest.mark.parametrize("kind,extra", [("ed25519", []), ("ec", ["--curve", "P-384"]), ("rsa", ["--bits", "2048"]),
                                        ("hmac", ["--alg", "HS512"]), ("field", [])])
def test_keys_generate_writes_0600_and_refuses_to_overwrite(tmp_path: Path, kind: str, extra: list[str]) -> None:
    out = tmp_path / f"{kind}.key"
    r = run("keys", "generate", kind, "-o", str(out), *extra, "--json")
    assert r.returncode == 0, r.stderr
    assert mode(out) == 0o600
    content = out.read_bytes()
    info = json.loads(r.stdout)
    assert info["file"] == str(out) and info["mode"] == "0600"
    # The key never reaches stdout: only the entry that reads the file.
    body = b"".join(line for line in content.splitlines() if not line.startswith(b"-----"))
    assert body.decode() not in r.stdout and len(body) >= 40
    if kind in ("ed25519", "ec", "rsa"):
        assert content.startswith(b"-----BEGIN PRIVATE KEY-----\n")
        assert info["config"]["pem"] == {"file": str(out)}
    elif kind == "hmac":
        assert len(base64.b64decode(content)) == 64
        assert info["config"]["alg"] == "HS512"
    else:
        assert len(base64.b64decode(content)) == 32
    # A second run refuses and leaves the file alone; --force replaces it, still 0600.
    r = run("keys", "generate", kind, "-o", str(out), *extra)
    assert r.returncode == 2 and "exists" in r.stderr and "--force" in r.stderr
    assert out.read_bytes() == content
    os.chmod(out, 0o644)
    r = run("keys", "generate", kind, "-o", str(out), *extra, "--force")
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() != content
    assert mode(out) == 0o600


def test_keys_generate_does_not_follow_a_symlink(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("keep")
    link = tmp_path / "key.pem"
    link.symlink_to(target)
    r = run("keys", "generate", "ed25519", "-o", str(link))
    assert r.returncode == 2
    assert target.read_text() == "keep"


def test_generated_keys_sign_and_their_jwks_verifies(tmp_path: Path) -> None:
    """keys generate -> token sign with the private key -> jwks -> token verify with the public set."""
    ed, ec, rsa = tmp_path / "ed.pem", tmp_path / "ec.pem", tmp_path / "rsa.pem"
    kids = {}
    for path, kind, extra in ((ed, "ed25519", []), (ec, "ec", []), (rsa, "rsa", ["--bits", "2048", "--alg", "PS256"])):
        r = run("keys", "generate", kind, "-o", str(path), *extra, "--json")
        assert r.returncode == 0, r.stderr
        kids[kind] = json.loads(r.stdout)["config"]
    # RSA keys need --alg in the set (bitsec never guesses RS256 against PS256).
    r = run("jwks", str(rsa))
    assert r.returncode == 2 and "alg" in r.stderr
    jwks_path = tmp_path / "jwks.json"
    r = run("jwks", str(ed), str(ec), str(rsa), "--alg", "PS256", "-o", str(jwks_path))
    assert r.returncode == 0, r.stderr
    jwks = json.loads(jwks_path.read_text())
    assert [k["kty"] for k in jwks["keys"]] == ["OKP", "EC", "RSA"]
    for k in jwks["keys"]:
        assert not {"d", "p", "q", "dp", "dq", "qi"} & set(k), k
    assert [k["kid"] for k in jwks["keys"]] == [kids["ed25519"]["kid"], kids["ec"]["kid"], kids["rsa"]["kid"]]
    # The same key as a public PEM or inside the private PEM gives the same JWK.
    signer = write_config(tmp_path / "signer.json", {"tokens": {"keys": list(kids.values())}})
    verifier = write_config(tmp_path / "verifier.json", {"tokens": {"jwks": {"file": str(jwks_path)}}})
    for kind in kids:
        r = run("token", "sign", '{"sub": "alice", "role": "x"}', "-c", str(signer), f"--kid={kids[kind]['kid']}", "--ttl", "600")
        assert r.returncode == 0, r.stderr
        token = r.stdout.strip()
        r = run("token", "verify", "-c", str(verifier), "--json", stdin=token)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["claims"]["sub"] == "alice"


def test_jwk_matches_cryptography(tmp_path: Path) -> None:
    """The public JWK computed natively equals the key's public numbers (interop check)."""
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    from bitsec import keys

    def b64(n: int, size: int | None = None) -> str:
        raw = n.to_bytes(size or (n.bit_length() + 7) // 8, "big")
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    pem = keys.generate_signing_key("P-521")
    pub = load_pem_private_key(pem.encode(), None).public_key().public_numbers()  # type: ignore[union-attr]
    jwk = keys.public_jwk(pem)
    assert (jwk["x"], jwk["y"], jwk["alg"]) == (b64(pub.x, 66), b64(pub.y, 66), "ES512")
    pem = keys.generate_signing_key("RSA-2048")
    rpub = load_pem_private_key(pem.encode(), None).public_key().public_numbers()  # type: ignore[union-attr]
    jwk = keys.public_jwk(pem, alg="RS256")
    assert (jwk["n"], jwk["e"]) == (b64(rpub.n), b64(rpub.e))


def test_rfc7638_thumbprint(tmp_path: Path) -> None:
    """RFC 7638 section 3.1: the example RSA key's thumbprint."""
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicNumbers
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from bitsec import keys

    n_b64 = ("0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMs"
             "tn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n"
             "91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw")
    n = int.from_bytes(base64.urlsafe_b64decode(n_b64 + "=="), "big")
    pem = RSAPublicNumbers(65537, n).public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    assert keys.jwk_thumbprint(pem) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_token_sign_verify_inspect(tmp_path: Path) -> None:
    key = tmp_path / "hs.key"
    r = run("keys", "generate", "hmac", "-o", str(key), "--kid", "hs1", "--json")
    assert r.returncode == 0, r.stderr
    cfg = write_config(tmp_path / "c.json", {"tokens": {"keys": [json.loads(r.stdout)["config"]], "issuer": "https://idp"}})
    r = run("token", "sign", "-c", str(cfg), "--ttl", "300", stdin='{"sub": "bob", "iss": "https://idp"}')
    assert r.returncode == 0, r.stderr
    token = r.stdout.strip()
    assert token.count(".") == 2
    r = run("token", "verify", "-c", str(cfg), stdin=token)
    assert r.returncode == 0 and r.stdout.startswith("valid"), r.stderr
    # Tampered: exit 1 with the reason; the token is never echoed.
    h, p, s = token.split(".")
    bad = f"{h}.{p}.{('A' if s[0] != 'A' else 'B') + s[1:]}"
    r = run("token", "verify", "-c", str(cfg), "--json", stdin=bad)
    assert r.returncode == 1
    assert json.loads(r.stdout) == {"valid": False, "reason": "bad_signature"}
    assert s not in r.stdout + r.stderr
    # Expired (verified as of a later time).
    r = run("token", "verify", "-c", str(cfg), "--at", str(2**40), stdin=token)
    assert r.returncode == 1 and "expired" in r.stderr
    # inspect decodes without verifying, clearly labelled.
    r = run("token", "inspect", bad)
    assert r.returncode == 0
    assert r.stdout.startswith("UNVERIFIED")
    assert '"sub": "bob"' in r.stdout
    r = run("token", "inspect", "--json", stdin=token)
    doc = json.loads(r.stdout)
    assert doc["verified"] is False and doc["header"]["alg"] == "HS256" and doc["payload"]["sub"] == "bob"
    r = run("token", "inspect", "not-a-token")
    assert r.returncode == 1
    r = run("token", "sign", "-c", str(cfg), "[1, 2]")
    assert r.returncode == 2 and "object" in r.stderr


# ---- totp -------------------------------------------------------------------------------------

def test_totp_uri_code_qr(tmp_path: Path) -> None:
    sec = tmp_path / "alice.totp"
    r = run("totp", "uri", "--account", "alice@example.org", "--issuer", "ACME", "--generate", "--secret-file", str(sec))
    assert r.returncode == 0, r.stderr
    assert mode(sec) == 0o600
    secret = sec.read_text().strip()
    assert len(secret) == 32
    assert r.stdout.strip() == bitsec.totp_provisioning_uri(secret, "alice@example.org", "ACME")
    # --generate never overwrites a secret.
    r = run("totp", "uri", "--account", "a", "--generate", "--secret-file", str(sec))
    assert r.returncode == 2 and sec.read_text().strip() == secret
    r = run("totp", "code", "--secret-file", str(sec), "--at", "1700000000", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["code"] == bitsec.totp_now(secret, at=1700000000)
    assert doc["step"] == 1700000000 // 30 and doc["valid_for"] == 30 - 1700000000 % 30
    import pyotp
    r = run("totp", "code", "--secret-env", "S", "--digits", "8", "--algorithm", "SHA256", "--at", "1700000000",
            env={"S": secret})
    assert r.stdout.strip() == pyotp.TOTP(secret, digits=8, digest="sha256").at(1700000000)
    r = run("totp", "qr", "--account", "alice", "--secret-file", str(sec))
    assert r.returncode == 0, r.stderr
    assert "█" in r.stdout and len(r.stdout.splitlines()) > 20
    assert secret not in r.stdout
    png = tmp_path / "qr.png"
    r = run("totp", "qr", "--account", "alice", "--secret-file", str(sec), "--png", str(png))
    assert r.returncode == 0, r.stderr
    assert png.read_bytes().startswith(b"\x89PNG") and mode(png) == 0o600
    r = run("totp", "code")
    assert r.returncode == 2 and "--secret-file" in r.stderr


def test_totp_qr_without_the_extra_says_what_to_install(tmp_path: Path) -> None:
    fake = tmp_path / "shadow" / "qrcode"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named qrcode')\n")
    sec = tmp_path / "s"
    sec.write_text("JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP\n")
    r = run("totp", "qr", "--account", "a", "--secret-file", str(sec), env={"PYTHONPATH": str(tmp_path / "shadow")})
    assert r.returncode == 2
    assert "pip install 'bitsec[qr]'" in r.stderr


# ---- field ------------------------------------------------------------------------------------

def test_field_encrypt_decrypt_rewrap(tmp_path: Path) -> None:
    k1, k2 = tmp_path / "k1", tmp_path / "k2"
    for k, kid in ((k1, "2026-01"), (k2, "2026-07")):
        assert run("keys", "generate", "field", "-o", str(k), "--kid", kid).returncode == 0
    e1 = {"id": "2026-01", "secret": {"file": str(k1), "encoding": "base64"}}
    e2 = {"id": "2026-07", "secret": {"file": str(k2), "encoding": "base64"}}
    old = write_config(tmp_path / "old.json", {"fields": {"keys": [e1]}})
    new = write_config(tmp_path / "new.json", {"fields": {"keys": [e1, e2], "primary": "2026-07"}})
    plaintext = "4111 1111 1111 1111"
    r = run("field", "encrypt", "-c", str(old), "--context", "cards.number|42", stdin=plaintext)
    assert r.returncode == 0, r.stderr
    token = r.stdout.strip()
    assert plaintext not in r.stdout
    r = run("field", "decrypt", "-c", str(old), "--context", "cards.number|42", stdin=token)
    assert r.returncode == 0 and r.stdout == plaintext, r.stderr
    r = run("field", "decrypt", "-c", str(old), "--context", "cards.number|43", "--json", stdin=token)
    assert r.returncode == 1
    assert json.loads(r.stdout) == {"decrypted": False, "reason": "wrong_context"}
    r = run("field", "rewrap", "-c", str(new), "--context", "cards.number|42", "--json", stdin=token)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["rewrapped"] is True and doc["key_id"] == "2026-07"
    r = run("field", "decrypt", "-c", str(new), "--context", "cards.number|42", doc["token"])
    assert r.stdout == plaintext
    r = run("field", "decrypt", "-c", str(old), "--context", "cards.number|42", doc["token"])
    assert r.returncode == 1 and "unknown_key" in r.stderr and plaintext not in r.stdout + r.stderr


# ---- audit ------------------------------------------------------------------------------------

def _trail(tmp_path: Path, events: int) -> Path:
    log = tmp_path / "audit.log"
    with bitsec.Runtime({"audit": {"sinks": [{"type": "file", "path": str(log)}]}}) as rt:
        for i in range(events):
            rt.audit_emit({"type": "authorization", "subtype": "permission_denied", "actor": f"user{i}", "result": "denied"})
    return log


def test_audit_verify_and_tail(tmp_path: Path) -> None:
    log = _trail(tmp_path, 5)
    r = run("audit", "verify", str(log))
    assert r.returncode == 0 and r.stdout.startswith("intact"), r.stderr
    r = run("audit", "tail", str(log), "-n", "3")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 3
    assert "actor=user4" in lines[1] and lines[2].split()[0] == "7"
    r = run("audit", "tail", str(log), "-n", "2", "--json")
    recs = [json.loads(x) for x in r.stdout.splitlines()]
    assert [x["seq"] for x in recs] == [6, 7]
    # Tampering: verify exits 1 and names the place.
    text = log.read_text().replace("user2", "userX")
    log.write_text(text)
    r = run("audit", "verify", str(log))
    assert r.returncode == 1 and r.stdout.startswith("TAMPERED")
    r = run("audit", "verify", str(tmp_path / "nope.log"))
    assert r.returncode == 2


def test_audit_tail_follows_new_records(tmp_path: Path) -> None:
    log = _trail(tmp_path, 1)
    env = {**os.environ, "BITSEC_LIBRARY": bitsec.library_path()}
    p = subprocess.Popen([sys.executable, "-m", "bitsec", "audit", "tail", str(log), "-n", "1", "--follow",
                          "--interval", "0.05"], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert p.stdout is not None
        first = p.stdout.readline()
        assert "audit/stopped" in first
        with bitsec.Runtime({"audit": {"sinks": [{"type": "file", "path": str(log)}]}}) as rt:
            rt.audit_emit({"type": "authorization", "subtype": "permission_denied", "actor": "late", "result": "denied"})
        seen = [p.stdout.readline() for _ in range(3)]
        assert any("actor=late" in s for s in seen), seen
    finally:
        p.kill()
        p.wait(timeout=30)
