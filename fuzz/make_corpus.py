#!/usr/bin/env python3
"""Regenerates the seed corpora of fuzz/corpus/<target>/ (docs/fuzzing.md).

Seeds come from the standard test vectors in tests/vectors (RFC 7520 JWS, RFC 8037 Ed25519, RFC 6238/4226,
Fernet), the example configurations and policies, the documentation's examples, and tokens,
field ciphertexts and sealed TOTP secrets made by the library itself with the fuzz runtimes'
keys (fuzz/runtime/*.json), so that seeds reach past signature and tag checks.

Usage: python3 fuzz/make_corpus.py [--lib build/lib/libbitsec.so.1] [--vectors DIR]
The committed corpus is this script's output; `make fuzz` copies it to build/fuzz/corpus.
Needs `cryptography` (for the JWK form of the fuzz keys and JOSE headers the library's own
signer never writes).
"""
from __future__ import annotations

import argparse
import base64
import ctypes
import hashlib
import hmac
import json
import pathlib
import shutil

ROOT = pathlib.Path(__file__).resolve().parent.parent
FUZZ = ROOT / "fuzz"
RS = b"\x1e"  # part separator of multi-argument inputs (Harness.swift)
NOW = 1_800_000_000  # fixedNow of the harness
FAR = 4_102_444_800  # 2100-01-01


def b64u(b: bytes) -> bytes:
    return base64.urlsafe_b64encode(b).rstrip(b"=")


def j(o) -> bytes:
    return json.dumps(o, separators=(",", ":")).encode()


class Lib:
    def __init__(self, path: str):
        self.l = ctypes.CDLL(path)
        self.l.bitsec_last_error.restype = ctypes.c_char_p

    def open(self, name: str, tmp: str = "/tmp") -> ctypes.c_void_p:
        text = (FUZZ / "runtime" / f"{name}.json").read_text().replace("@REPO@", str(ROOT)).replace("@TMP@", tmp)
        rt = ctypes.c_void_p()
        b = text.encode()
        rc = self.l.bitsec_runtime_open(b, ctypes.c_size_t(len(b)), ctypes.byref(rt))
        assert rc == 0, (name, rc, self.l.bitsec_last_error())
        return rt

    def out(self, fn, *args) -> bytes:
        buf = ctypes.create_string_buffer(1 << 16)
        n = ctypes.c_size_t()
        rc = fn(*args, buf, ctypes.c_size_t(len(buf)), ctypes.byref(n))
        assert rc == 0, (fn, rc, self.l.bitsec_last_error())
        return buf.raw[: n.value]

    def sign(self, rt, claims: dict | bytes, kid: str) -> bytes:
        c = claims if isinstance(claims, bytes) else j(claims)
        k = kid.encode()
        return self.out(self.l.bitsec_token_sign, rt, c, ctypes.c_size_t(len(c)), k, ctypes.c_size_t(len(k)))

    def encrypt(self, rt, plain: bytes, ctx: bytes, flags: int) -> bytes:
        return self.out(self.l.bitsec_encrypt_field, rt, plain, ctypes.c_size_t(len(plain)), ctx,
                        ctypes.c_size_t(len(ctx)), ctypes.c_uint32(flags))

    def fernet(self, rt, plain: bytes, now: int) -> bytes:
        return self.out(self.l.bitsec_fernet_encrypt, rt, plain, ctypes.c_size_t(len(plain)), ctypes.c_int64(now))

    def seal(self, rt, secret: bytes, user: bytes) -> bytes:
        return self.out(self.l.bitsec_totp_secret_seal, rt, secret, ctypes.c_size_t(len(secret)), user,
                        ctypes.c_size_t(len(user)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", default=str(ROOT / "build/lib/libbitsec.so.1"))
    ap.add_argument("--vectors", default=str(ROOT / "tests/vectors"))
    ap.add_argument("--only", action="append", default=[], help="write only these targets' seeds (repeatable)")
    a = ap.parse_args()
    lib = Lib(a.lib)
    vec = pathlib.Path(a.vectors)
    corpus: dict[str, list[bytes]] = {}

    def add(target: str, *seeds: bytes) -> None:
        corpus.setdefault(target, []).extend(seeds)

    # ---- JOSE vectors -----------------------------------------------------------------------
    jws = [json.loads(p.read_text()) for p in sorted((vec / "jose/jws").glob("*.json"))]
    jws.append(json.loads((vec / "jose/curve25519/jws.json").read_text()))
    vector_keys, vector_tokens = [], []
    for v in jws:
        key = v["input"].get("key")
        if isinstance(key, dict):
            k = dict(key)
            if "alg" in v["input"]:
                k.setdefault("alg", v["input"]["alg"])
            vector_keys.append(k)
        compact = v.get("output", {}).get("compact")
        if compact:
            vector_tokens.append(compact.encode())

    # ---- tokens ------------------------------------------------------------------------------
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, utils

    def pem(name):
        return serialization.load_pem_private_key((FUZZ / "keys" / name).read_bytes(), None)

    rsa_k, ec_k, ed_k = pem("rs256.pem"), pem("es256.pem"), pem("eddsa.pem")
    hs = bytes.fromhex(json.loads((FUZZ / "runtime/tokens.json").read_text())["tokens"]["keys"][0]["secret"]["value"])

    def jws_sign(header: dict, payload: dict | bytes) -> bytes:
        h, p = b64u(j(header)), b64u(payload if isinstance(payload, bytes) else j(payload))
        si = h + b"." + p
        alg = header.get("alg")
        if alg == "HS256":
            sig = hmac.new(hs, si, hashlib.sha256).digest()
        elif alg == "RS256":
            sig = rsa_k.sign(si, padding.PKCS1v15(), hashes.SHA256())
        elif alg == "ES256":
            r, s = utils.decode_dss_signature(ec_k.sign(si, ec.ECDSA(hashes.SHA256())))
            sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        elif alg == "EdDSA":
            sig = ed_k.sign(si)
        else:
            sig = b"\x00" * 32
        return si + b"." + b64u(sig)

    rt = lib.open("tokens")
    good = {"sub": "u1", "iss": "https://issuer.example", "aud": "fuzz-api", "iat": NOW - 60, "exp": NOW + 600,
            "jti": "j-1", "roles": ["admin", "viewer"], "scope": "inspections:read reports:write",
            "tenant_id": "acme", "department": "quality"}
    claim_variants = [
        good,
        {**good, "exp": NOW - 3600},                      # expired
        {**good, "nbf": NOW + 3600},                      # not yet valid
        {**good, "iat": NOW + 3600},                      # issued in the future
        {**good, "aud": ["other", "fuzz-api"]},
        {**good, "aud": "other"},                         # wrong audience
        {**good, "iss": "https://evil.example"},          # wrong issuer
        {k: v for k, v in good.items() if k != "sub"},    # missing required claim
        {k: v for k, v in good.items() if k != "exp"},    # missing exp
        {**good, "exp": "soon"},                          # invalid claim type
        {**good, "jti": "revoked-jti"},                   # revoked
        {**good, "type": "refresh"},                      # refresh token
        {**good, "role": "operator", "scp": ["a:b"], "nested": {"a": [1, 2.5, None, True, "\u00e9\u2603"]}},
    ]
    jose_seeds = []
    for i, c in enumerate(claim_variants):
        for kid in ("hs", "es", "ed", "rs"):
            if kid != "hs" and i > 2:
                continue
            add("verify_token", lib.sign(rt, c, kid))
        jose_seeds.append(j(c))
    headers = [
        {"alg": "HS256", "typ": "JWT", "kid": "hs"}, {"alg": "HS256"}, {"alg": "HS256", "kid": "nope"},
        {"alg": "HS256", "kid": "hs", "crit": ["exp"]}, {"alg": "none"}, {"alg": "RS256", "kid": "hs"},
        {"alg": "HS256", "kid": "hs", "jku": "https://x", "x5u": "https://y", "jwk": {"kty": "oct", "k": "AA"}},
        {"alg": "HS256", "kid": "hs", "typ": "at+jwt", "cty": "JWT", "b64": False},
        {"alg": "RS256", "kid": "rs"}, {"alg": "ES256", "kid": "es"}, {"alg": "EdDSA", "kid": "ed"},
        {"alg": "ES256"}, {"alg": "PS256", "kid": "rs"},
    ]
    for h in headers:
        add("verify_token", jws_sign(h, good))
        jose_seeds.append(j(h) + RS + j(good))
    jose_seeds.append(j({"alg": "ES256", "kid": "es"}) + RS + j(good) + RS + b"\x00" * 64)
    jose_seeds.append(j({"alg": "RS256", "kid": "rs"}) + RS + j(good) + RS + b"\x01" * 256)
    jose_seeds.append(j({"alg": "EdDSA", "kid": "ed"}) + RS + j(good) + RS + b"\x02" * 64)
    add("verify_token", *vector_tokens, b"", b"a.b.c", b"eyJhbGciOiJIUzI1NiJ9..", b"..",
        b"eyJhbGciOiJIUzI1NiJ9.e30.AAAA")
    add("verify_token_jose", *jose_seeds)
    lib.l.bitsec_runtime_close(rt)

    # ---- jwks --------------------------------------------------------------------------------
    def ub(n: int, size: int) -> str:
        return b64u(n.to_bytes(size, "big")).decode()

    rn = rsa_k.public_key().public_numbers()
    en = ec_k.public_key().public_numbers()
    edx = ed_k.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    own = [
        {"kty": "RSA", "kid": "rs", "alg": "RS256", "use": "sig", "n": ub(rn.n, 256), "e": ub(rn.e, 3)},
        {"kty": "EC", "kid": "es", "crv": "P-256", "x": ub(en.x, 32), "y": ub(en.y, 32)},
        {"kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": b64u(edx).decode()},
        {"kty": "oct", "kid": "hs", "alg": "HS256", "k": b64u(hs).decode()},
        {"kty": "RSA", "kid": "enc", "use": "enc", "n": ub(rn.n, 256), "e": "AQAB"},
    ]
    add("jwks", j({"keys": own}), j({"keys": vector_keys}), j({"keys": []}), b"{}",
        *[j({"keys": [k]}) for k in own + vector_keys],
        j({"keys": [{"kty": "EC", "crv": "P-384", "x": "AA", "y": "AA"}]}),
        j({"keys": [{"kty": "RSA", "alg": "PS384", "n": "AQAB", "e": "AQAB", "x5c": ["AA"]}]}))
    if not a.only or "jwks" in a.only:
        (FUZZ / "runtime/jwks_tokens.txt").write_bytes(
            b"# Verified after every JWK Set the jwks target loads (RFC 7520 / RFC 8037 vectors and\n"
            b"# tokens of the fuzz keys); regenerated by fuzz/make_corpus.py.\n"
            + b"\n".join(vector_tokens + [jws_sign(h, good) for h in headers[8:11] + headers[:1]]) + b"\n")

    # ---- config ------------------------------------------------------------------------------
    erp = json.loads((ROOT / "examples/policies/erp.json").read_text())
    adr = json.loads((ROOT / "examples/policies/adr007.json").read_text())
    pub_pem = rsa_k.public_key().public_bytes(serialization.Encoding.PEM,
                                              serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    sections = {
        "tokens": {"keys": [{"kid": "hs", "alg": "HS256", "secret": {"value": hs.hex(), "encoding": "hex"}},
                            {"kid": "pem", "alg": "RS256", "pem": pub_pem}, {"jwk": own[2]}],
                   "jwks": {"keys": own[:2]}, "issuer": ["a", "b"], "audience": "x", "leeway_seconds": 30,
                   "required_claims": ["sub"], "typ": "JWT", "max_token_bytes": 4096, "cache_size": 16,
                   "revocation": {"backend": "memory", "max_entries": 10},
                   "issuing": {"kid": "hs", "access_ttl_seconds": 60, "refresh_ttl_seconds": 600}},
        "permissions": {"policy": erp, "shadow_policy": adr, "audit_denials": False},
        "fields": json.loads((FUZZ / "runtime/fields.json").read_text())["fields"],
        "rate_limits": {"store": "local", "max_keys": 64, "outage_retry_ms": 0,
                        "categories": {"default": {"capacity": 100, "period_seconds": 60},
                                       "auth": {"capacity": 10, "refill": 5, "period_seconds": 60, "failure_policy": "deny",
                                                "local_share_percent": 50}},
                        "brute_force": {"max_failures": 5, "window_seconds": 3600, "block_seconds": 3600}},
        "totp": {"algorithm": "SHA256", "digits": 8, "period": 30, "t0": 0, "window": 1, "issuer": "Bitcorp ERP",
                 "min_secret_bits": 128, "state": "memory", "throttle": {"max_failures": 5, "window_s": 300},
                 "backup_codes": {"count": 10, "length": 10, "iterations": 1000,
                                  "pepper": {"env": "HOME"}, "used_ttl_s": 60}},
        "audit": {"sinks": [], "durability": "none"},
    }
    add("config", b"{}", b"[]", b"", j({"$schema": "x", "allow_inline_secrets": True, **sections}),
        *[j({"allow_inline_secrets": True, k: v}) for k, v in sections.items()],
        j({"tokens": {"keys": [{"kid": "hs", "alg": "HS256", "secret": {"value": "short"}}]}}),
        j({"rate_limits": {}}), j({"totp": {}}), j({"permissions": {"policy": {}}}))

    # ---- permissions -------------------------------------------------------------------------
    add("policy", (ROOT / "examples/policies/erp.json").read_bytes(), (ROOT / "examples/policies/adr007.json").read_bytes(),
        j({"resources": ["inspections", "defects", "reports"], "actions": ["create", "read", "update", "delete"],
           "tenant_isolation": True, "scope_actions": {"write": ["create", "update", "delete"]},
           "roles": {"viewer": {"allow": ["*:read"]},
                     "operator": {"inherits": ["viewer"], "allow": ["inspections:create",
                                  {"permission": "inspections:update", "owner_only": True}], "deny": ["reports:*"]},
                     "manager": {"inherits": ["operator"], "allow": [{"permission": "reports:create", "same_department": True},
                                 {"permission": "defects:update", "department": "quality"}]},
                     "platform": {"allow": [{"permission": "*:*", "cross_tenant": True}]}},
           "deny": ["reports:delete", {"permission": "defects:delete", "roles": ["operator"]}]}),
        j({"resources": ["r"], "actions": ["a"], "roles": {"x": {"inherits": ["y"]}, "y": {"inherits": ["x"]}}}),
        b"{}\x01")
    principals = [b"u1\0admin\0acme\0sales", b"u2\0operator,viewer\0acme\0quality\0maintenance_records:write read",
                  b"u3\0super_admin\0\0", b"\0\0\0", b"u4\0manager\tunknown\0t2\0sales\0"]
    perms = [b"equipment:read", b"maintenance_records:update", b"reports:export", b"audit_logs:delete", b"x:y", b":",
             b"equipment:read,reports:read customers:update"]
    ctxs = [b"u2\0acme\0sales", b"\0\0", b"u1\0other\0quality"]
    for i, p in enumerate(principals):
        add("check_permission", p + RS + perms[i % len(perms)] + RS + ctxs[i % len(ctxs)], p + RS + perms[(i + 3) % len(perms)])
    add("check_permission", j(good) + RS + b"equipment:read" + RS + b"u1\0acme\0",
        j({"user_id": "u9", "role": "viewer", "scp": ["reports:read"], "tenant": "acme"}) + RS + b"reports:read", b"u1\0admin\0acme\0sales")

    # ---- totp --------------------------------------------------------------------------------
    rt = lib.open("totp")
    totp_vectors = json.loads((vec / "totp/rfc6238.json").read_text())
    seeds = []
    for v in totp_vectors["vectors"][:6]:
        secret = totp_vectors["seeds"][v["mode"]]["base32"]
        code = v["totp"]
        seeds.append(secret.encode() + RS + code.encode() + RS + b"alice" + RS + b"\x05\x08\x1e\x00\x00\x01")
    sec = b"GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
    sealed = lib.seal(rt, sec, b"alice")
    seeds += [sec + RS + b"287082" + RS + b"alice", sec.lower() + b"=" * 0 + RS + b"12345678", sec + b"======" + RS + b"000000",
              sealed + RS + b"287082" + RS + b"alice", sealed + RS + b"123456" + RS + b"bob", sealed + RS + b"12 34 56",
              b"GEZDGNBVGY3TQOJQ" + RS + b"\xd9\xa1\xd9\xa2\xd9\xa3\xd9\xa4\xd9\xa5\xd9\xa6" + RS + b"\xc3\xa9"]
    add("totp", *seeds)
    lib.l.bitsec_runtime_close(rt)

    # ---- password_phc ------------------------------------------------------------------------
    rt = lib.open("passwords")
    seeds = []
    for pw in (b"correct horse battery staple", b"", "caf\u00e9 \U0001F512".encode()):
        stored = lib.out(lib.l.bitsec_password_hash, rt, pw, ctypes.c_size_t(len(pw)))
        seeds += [stored + RS + pw, stored + RS + b"wrong"]
    seeds += [b"$scrypt$ln=10,r=1,p=1$c2FsdHNhbHRzYWx0c2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g" + RS + b"x",
              b"$scrypt$ln=30,r=8,p=1$c2FsdHNhbHRzYWx0c2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g" + RS + b"x",
              b"scrypt$16384$8$1$c2FsdA==$aGFzaA==" + RS + b"password", b"$argon2id$v=19$m=65536,t=3,p=4$c2FsdA$aGFzaA"]
    add("password_phc", *seeds)
    lib.l.bitsec_runtime_close(rt)

    # ---- decrypt_field -----------------------------------------------------------------------
    rt = lib.open("fields")
    seeds = []
    for plain, ctx, flags in [(b"hello", b"users.phone|42", 0), (b"", b"users.phone|42", 1), (b"x" * 100, b"", 0),
                              (b"alice@example.com", b"users.email", 2), (b"alice@example.com", b"users.email", 3),
                              (b"\x00\xff" * 20, b"det.serial", 2)]:
        tok = lib.encrypt(rt, plain, ctx, flags)
        seeds += [tok + RS + ctx, tok]
    for f in ("verify.json", "invalid.json"):
        for v in json.loads((vec / "fernet" / f).read_text()):
            seeds.append(v["token"].encode())
    seeds.append(lib.fernet(rt, b"legacy value", 499_162_800))
    add("decrypt_field", *seeds)
    lib.l.bitsec_runtime_close(rt)

    # ---- audit_emit --------------------------------------------------------------------------
    add("audit_emit",
        j({"type": "authentication", "subtype": "failed_login", "result": "failure", "user_id": "alice",
           "ip_address": "203.0.113.7"}),
        j({"type": "data_access", "action": "read", "resource": "equipment_records", "resource_id": "42",
           "sensitive_data_accessed": True, "data_classification": "pii", "actor": "u1", "tenant": "acme"}),
        j({"type": "authorization", "subtype": "permission_denied", "result": "denied", "reason": "no_grant",
           "severity": "medium", "ip": "2001:db8::1", "user_agent": "curl/8", "session_id": "s1"}),
        j({"type": "login_success", "success": True, "event_subtype": "login"}),
        j({"type": "security_violation", "details": {"a": [1, {"b": None}], "c": "\u00e9"}}),
        j({"type": "fuzz_event", "operation": "x", "failure_reason": "y"}),
        j({"type": "audit", "subtype": "started"}), j({"type": "session", "seq": 1}), b"[]", b"{}")

    # ---- csrf --------------------------------------------------------------------------------
    rt = lib.open("csrf")
    seeds = []
    for binding in (b"fuzz-session", b"s", "s\u00e9ssion".encode(), b"x" * 300):
        at = ctypes.c_int64(1_800_000_000 - 10)
        tok = lib.out(lib.l.bitsec_csrf_token_issue, rt, binding, ctypes.c_size_t(len(binding)), at)
        cookie = lib.out(lib.l.bitsec_csrf_cookie_issue, rt, binding, ctypes.c_size_t(len(binding)), at)
        seeds += [binding + RS + tok, binding + RS + cookie + RS + cookie, binding + RS + cookie + RS + tok,
                  binding + RS + tok[:-1] + RS + tok + RS + b"POST" + RS + b"https://app.example.com" + RS + b"same-origin"]
    seeds += [b"s" + RS + RS + RS + b"DELETE" + RS + b"null", b"s" + RS + b"x" + RS + b"x" + RS + b"put" + RS + RS + b"cross-site",
              b"s" + RS + b"A" * 76 + RS + RS + b"POST" + RS + b"HTTPS://APP.EXAMPLE.COM:443",
              b"s" + RS + RS + RS + b"post" + RS + b"http://[::1]:8080" + RS + b"same-site", b"" + RS + b"t"]
    add("csrf", *seeds)
    lib.l.bitsec_runtime_close(rt)

    # ---- session -----------------------------------------------------------------------------
    rt = lib.open("sessions")
    seeds = []
    for user, client, agent in ((b"alice", b"203.0.113.7", b"Mozilla/5.0"), (b"u\xc3\xa9", b"2001:db8::1", b""),
                                (b"x" * 128, b"198.51.100.1", b"curl/8")):
        tok = ctypes.create_string_buffer(128)
        sid = ctypes.create_string_buffer(128)
        rc = lib.l.bitsec_session_create(rt, user, ctypes.c_size_t(len(user)), None, ctypes.c_size_t(0), client,
                                         ctypes.c_size_t(len(client)), agent, ctypes.c_size_t(len(agent)),
                                         ctypes.c_int64(1_800_000_000 - 10), tok, sid)
        assert rc == 0, (rc, lib.l.bitsec_last_error())
        t, i = tok.value, sid.value
        seeds += [t + RS + client + RS + agent, t + RS + b"192.0.2.1" + RS + agent, i + RS + client,
                  t[:-1] + RS + client, t + b"A" + RS + client, t.lower() + RS + client + RS + agent]
    seeds += [b"", RS + RS, b"A" * 56, b"-" * 56 + RS + b"not an address", b"\xff" * 56 + RS + b"::1"]
    add("session", *seeds)
    lib.l.bitsec_runtime_close(rt)

    for target, seeds in corpus.items():
        if a.only and target not in a.only:
            continue
        d = FUZZ / "corpus" / target
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        for s in seeds:
            (d / hashlib.sha1(s).hexdigest()[:16]).write_bytes(s)
        print(f"{target}: {len(set(seeds))} seeds")


if __name__ == "__main__":
    main()
