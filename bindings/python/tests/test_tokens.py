"""Tokens: interop with PyJWT both ways, every failure reason, RFC 8725 attacks, revocation
(in process and in a real Redis), pairs and refresh, reloads under concurrency, JWKS refresher."""
from __future__ import annotations

import base64
import hashlib
import hmac
import http.server
import json
import threading
import time
from typing import Any, Iterator

import jwt
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from jwt.algorithms import ECAlgorithm, HMACAlgorithm, OKPAlgorithm, RSAAlgorithm

import bitsec
from bitsec import (
    AlgorithmMismatchError, BackendUnavailableError, ConfigError, CritUnsupportedError, ExpiredTokenError,
    InvalidClaimError, InvalidSignatureError, JWKSRefresher, MalformedTokenError, MissingClaimError,
    RevokedTokenError, TokenError, TokenIssuedInFutureError, TokenNotYetValidError, TokenTooLargeError,
    UnknownKeyError, UnsupportedAlgorithmError, WrongAudienceError, WrongIssuerError, WrongTokenTypeError,
)

NOW = 1_800_000_000
ISS = "https://auth.bitcorp.example"
AUD = "inspection-api"

ALGS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA",
        "HS256", "HS384", "HS512"]


def b64u(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def b64j(obj: Any) -> str:
    return b64u(json.dumps(obj, separators=(",", ":")).encode())


class Keys:
    """One private key per algorithm, its JWK (with private part) and public forms."""

    def __init__(self) -> None:
        rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        curves = {"ES256": ec.SECP256R1(), "ES384": ec.SECP384R1(), "ES512": ec.SECP521R1()}
        self.private: dict[str, Any] = {}
        self.public: dict[str, Any] = {}
        self.jwk: dict[str, dict] = {}
        for alg in ALGS:
            if alg[:2] in ("RS", "PS"):
                k = rsa_key
                j = json.loads(RSAAlgorithm.to_jwk(k))
                pub = k.public_key()
            elif alg.startswith("ES"):
                k = ec.generate_private_key(curves[alg])
                j = json.loads(ECAlgorithm.to_jwk(k))
                pub = k.public_key()
            elif alg == "EdDSA":
                k = ed25519.Ed25519PrivateKey.generate()
                j = json.loads(OKPAlgorithm.to_jwk(k))
                pub = k.public_key()
            else:
                k = hashlib.sha512(alg.encode()).digest()[: {"HS256": 32, "HS384": 48, "HS512": 64}[alg]]
                j = json.loads(HMACAlgorithm.to_jwk(k))
                pub = k
            j["alg"] = alg
            j["kid"] = f"k-{alg}"
            self.private[alg] = k
            self.public[alg] = pub
            self.jwk[alg] = j

    def public_pem(self, alg: str) -> bytes:
        return self.public[alg].public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys()


def config(keys: Keys, **tokens: Any) -> dict:
    t = {"jwks": {"keys": [keys.jwk[a] for a in ALGS]}, "issuer": ISS, "audience": AUD}
    t.update(tokens)
    return {"allow_inline_secrets": True, "tokens": t}


@pytest.fixture(scope="module")
def rt(keys: Keys) -> Iterator[bitsec.Runtime]:
    with bitsec.Runtime(config(keys)) as r:
        yield r


def claims(**extra: Any) -> dict:
    c = {"sub": "user-1", "iss": ISS, "aud": AUD, "iat": NOW, "exp": NOW + 1800, "role": "manager",
         "scope": "inspections:read inspections:write", "tenant_id": "t-1", "jti": "jti-1"}
    c.update(extra)
    return {k: v for k, v in c.items() if v is not None}


def pyjwt_sign(keys: Keys, alg: str, payload: dict, headers: dict | None = None) -> str:
    h = {"kid": f"k-{alg}"}
    h.update(headers or {})
    return jwt.encode(payload, keys.private[alg], algorithm=alg, headers=h)


def hs256(payload: Any, header: dict, key: bytes) -> str:
    head = b64j(header)
    body = payload if isinstance(payload, str) else b64j(payload)
    sig = hmac.new(key, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64u(sig)}"


# ---- interop -------------------------------------------------------------------------------

@pytest.mark.parametrize("alg", ALGS)
def test_pyjwt_signed_tokens_verify_in_bitsec(rt: bitsec.Runtime, keys: Keys, alg: str) -> None:
    token = pyjwt_sign(keys, alg, claims(jti=f"pyjwt-{alg}"))
    c = rt.verify_token(token, at=NOW + 10)
    assert c["sub"] == "user-1" and c["jti"] == f"pyjwt-{alg}"
    assert c.subject == "user-1"
    assert c.roles == ("manager",)
    assert c.scopes == ("inspections:read", "inspections:write")
    assert c.tenant_id == "t-1" and c.expires_at == NOW + 1800
    assert dict(c)["aud"] == AUD
    with pytest.raises(TypeError):
        c["sub"] = "root"  # type: ignore[index]


@pytest.mark.parametrize("alg", ALGS)
def test_bitsec_signed_tokens_verify_in_pyjwt(rt: bitsec.Runtime, keys: Keys, alg: str) -> None:
    token = rt.sign_token(claims(jti=f"bitsec-{alg}"), kid=f"k-{alg}")
    header = jwt.get_unverified_header(token)
    assert header == {"alg": alg, "typ": "JWT", "kid": f"k-{alg}"}
    decoded = jwt.decode(token, keys.public[alg], algorithms=[alg], audience=AUD, issuer=ISS,
                         options={"verify_exp": False, "verify_iat": False})
    assert decoded["jti"] == f"bitsec-{alg}"
    assert rt.verify_token(token, at=NOW)["jti"] == f"bitsec-{alg}"


def test_pem_keys_and_certificates(keys: Keys, tmp_path: Any) -> None:
    pem_file = tmp_path / "rsa.pem"
    pem_file.write_bytes(keys.public_pem("RS256"))
    priv = keys.private["ES256"].private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption())
    (tmp_path / "ec.key").write_bytes(priv)
    cfg = {"tokens": {"keys": [
        {"kid": "rsa", "alg": "RS256", "pem": {"file": str(pem_file)}},
        {"kid": "rsa-inline", "alg": "RS384", "pem": keys.public_pem("RS384").decode()},
        {"kid": "ec", "alg": "ES256", "pem": {"file": str(tmp_path / "ec.key")}},
        {"kid": "hs", "alg": "HS256", "secret": {"env": "BITSEC_TEST_TOKENS_SECRET"}},
    ], "issuer": ISS, "audience": AUD}}
    import os
    os.environ["BITSEC_TEST_TOKENS_SECRET"] = "s" * 32
    with bitsec.Runtime(cfg) as r:
        t = jwt.encode(claims(), keys.private["RS256"], algorithm="RS256", headers={"kid": "rsa"})
        assert r.verify_token(t, at=NOW)["sub"] == "user-1"
        t = jwt.encode(claims(), keys.private["RS384"], algorithm="RS384", headers={"kid": "rsa-inline"})
        assert r.verify_token(t, at=NOW)["sub"] == "user-1"
        t = r.sign_token(claims(), kid="ec")
        jwt.decode(t, keys.public["ES256"], algorithms=["ES256"], audience=AUD,
                   options={"verify_exp": False, "verify_iat": False})
        t = jwt.encode(claims(), "s" * 32, algorithm="HS256", headers={"kid": "hs"})
        assert r.verify_token(t, at=NOW)["sub"] == "user-1"
        with pytest.raises(bitsec.InvalidArgumentError):
            r.sign_token(claims(), kid="rsa")  # public key only
        d = r.describe()["sections"]["tokens"]
        assert {k["kid"]: k["can_sign"] for k in d["keys"]} == {"rsa": False, "rsa-inline": False, "ec": True, "hs": True}
        assert "s" * 32 not in json.dumps(d)


# ---- every failure reason ------------------------------------------------------------------

def test_every_reason(rt: bitsec.Runtime, keys: Keys) -> None:
    key = keys.private["HS256"]
    good = claims()
    head = {"alg": "HS256", "kid": "k-HS256", "typ": "JWT"}
    cases: list[tuple[str, type[TokenError]]] = [
        ("not-a-token", MalformedTokenError),
        ("a.b", MalformedTokenError),
        ("a.b.c.d", MalformedTokenError),
        (hs256(good, head, key) + "=", MalformedTokenError),  # padding is not base64url
        ("x" * 9000, TokenTooLargeError),
        (hs256(good, {"alg": "HS257", "kid": "k-HS256"}, key), UnsupportedAlgorithmError),
        (hs256(good, {"alg": "RS256", "kid": "k-HS256"}, key), AlgorithmMismatchError),
        (hs256(good, {"alg": "HS256", "kid": "nope"}, key), UnknownKeyError),
        (hs256(good, head, b"k" * 32), InvalidSignatureError),
        (hs256(claims(exp=NOW - 31), head, key), ExpiredTokenError),
        (hs256(claims(nbf=NOW + 31), head, key), TokenNotYetValidError),
        (hs256(claims(iat=NOW + 31), head, key), TokenIssuedInFutureError),
        (hs256(claims(iss="https://evil.example"), head, key), WrongIssuerError),
        (hs256(claims(aud=["other-api"]), head, key), WrongAudienceError),
        (hs256(claims(exp=None), head, key), MissingClaimError),
        (hs256(claims(iss=None), head, key), MissingClaimError),
        (hs256(claims(exp=str(NOW + 100)), head, key), InvalidClaimError),
        (hs256(claims(aud=[AUD, 7]), head, key), InvalidClaimError),
        (hs256(good, dict(head, crit=["exp"]), key), CritUnsupportedError),
        (hs256(claims(type="refresh"), head, key), WrongTokenTypeError),
    ]
    for token, cls in cases:
        with pytest.raises(cls) as ei:
            rt.verify_token(token, at=NOW)
        assert ei.value.reason == cls.reason
        assert bitsec.token_reason_name(cls.reason_code) == cls.reason
    # Leeway: 30 s both ways.
    assert rt.verify_token(hs256(claims(exp=NOW - 29), head, key), at=NOW)["sub"] == "user-1"
    assert rt.verify_token(hs256(claims(nbf=NOW + 29, jti="l2"), head, key), at=NOW)["sub"] == "user-1"
    # aud as a string or an array containing ours.
    assert rt.verify_token(hs256(claims(aud=["x", AUD]), head, key), at=NOW)
    # Revoked.
    t = hs256(claims(jti="revoke-me"), head, key)
    assert rt.verify_token(t, at=NOW)
    assert rt.revoke_token(jti="revoke-me", exp=NOW + 1800, at=NOW) is True
    with pytest.raises(RevokedTokenError):
        rt.verify_token(t, at=NOW)


def test_expired_message_and_explicit_instant(rt: bitsec.Runtime, keys: Keys) -> None:
    token = pyjwt_sign(keys, "RS256", claims(jti="inst"))
    assert rt.verify_token(token, at=NOW + 1800 + 29)
    with pytest.raises(ExpiredTokenError, match="^Token has expired$") as ei:
        rt.verify_token(token, at=NOW + 1800 + 30)
    assert isinstance(ei.value, TokenError) and isinstance(ei.value, bitsec.BitsecError)
    assert isinstance(ei.value, ValueError)

# ---- RFC 8725 attacks ----------------------------------------------------------------------

@pytest.mark.parametrize("variant", ["none", "None", "NONE", "nOnE"])
def test_alg_none_in_any_case(rt: bitsec.Runtime, variant: str) -> None:
    token = f"{b64j({'alg': variant, 'kid': 'k-HS256'})}.{b64j(claims())}."
    with pytest.raises(MalformedTokenError):  # empty signature segment
        rt.verify_token(token, at=NOW)
    token = f"{b64j({'alg': variant, 'kid': 'k-HS256'})}.{b64j(claims())}.{b64u(b'x')}"
    with pytest.raises(UnsupportedAlgorithmError):
        rt.verify_token(token, at=NOW)


@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA"])
def test_hs256_signed_with_a_public_key(keys: Keys, alg: str) -> None:
    pem = keys.public_pem(alg)
    with bitsec.Runtime({"tokens": {"jwks": {"keys": [{k: v for k, v in keys.jwk[alg].items() if k != "d"
                                                        and k not in ("p", "q", "dp", "dq", "qi")}]}}}) as r:
        for header in ({"alg": "HS256", "kid": f"k-{alg}"}, {"alg": "HS256"}):
            for secret in (pem, pem.strip(), keys.public[alg].public_bytes(serialization.Encoding.DER,
                                                                         serialization.PublicFormat.SubjectPublicKeyInfo)):
                token = hs256(claims(), header, secret)
                with pytest.raises(AlgorithmMismatchError):
                    r.verify_token(token, at=NOW)


def test_ecdsa_zero_and_der_signatures(rt: bitsec.Runtime, keys: Keys) -> None:
    head = b64j({"alg": "ES256", "kid": "k-ES256"})
    body = b64j(claims())
    with pytest.raises(InvalidSignatureError):
        rt.verify_token(f"{head}.{body}.{b64u(bytes(64))}", at=NOW)
    # r = n (the group order) and s = 1: out of range.
    n = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
    with pytest.raises(InvalidSignatureError):
        rt.verify_token(f"{head}.{body}.{b64u(n.to_bytes(32, 'big') + (1).to_bytes(32, 'big'))}", at=NOW)
    # A valid signature in DER form is refused; the same one in R||S form verifies.
    der = keys.private["ES256"].sign(f"{head}.{body}".encode(), ec.ECDSA(hashes.SHA256()))
    with pytest.raises(InvalidSignatureError):
        rt.verify_token(f"{head}.{body}.{b64u(der)}", at=NOW)
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
    r_, s_ = decode_dss_signature(der)
    raw = r_.to_bytes(32, "big") + s_.to_bytes(32, "big")
    assert rt.verify_token(f"{head}.{body}.{b64u(raw)}", at=NOW)
    # The malleable twin (n - s) is a valid ECDSA signature too; r, s in range, it verifies per RFC.
    assert encode_dss_signature(r_, s_) == der


def test_embedded_jwk_and_kid_traversal(rt: bitsec.Runtime) -> None:
    attacker = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(ECAlgorithm.to_jwk(attacker.public_key()))
    for kid in ("attacker", "k-ES256", None):
        header = {"alg": "ES256", "jwk": jwk, "jku": "http://127.0.0.1:1/jwks", "x5u": "http://127.0.0.1:1/x"}
        if kid:
            header["kid"] = kid
        token = jwt.encode(claims(), attacker, algorithm="ES256", headers=header)
        with pytest.raises((UnknownKeyError, InvalidSignatureError)):
            rt.verify_token(token, at=NOW)
    for kid in ("/".join([".."] * 4) + "/dev/null", "/dev/null", "..%2f..%2fetc%2fpasswd", "k-HS256/../k-HS256"):
        token = hs256(claims(), {"alg": "HS256", "kid": kid}, b"")
        with pytest.raises(UnknownKeyError):
            rt.verify_token(token, at=NOW)


def test_huge_and_deep_tokens(keys: Keys) -> None:
    with bitsec.Runtime(config(keys)) as r:
        big = "a" * (1 << 20)
        t0 = time.perf_counter()
        with pytest.raises(TokenTooLargeError):
            r.verify_token(f"{big}.{big}.{big}")
        assert time.perf_counter() - t0 < 5  # generous: it must not decode anything
    with bitsec.Runtime(config(keys, max_token_bytes=1 << 20)) as r:
        deep_header = b64u(b"[" * 10_000 + b"]" * 10_000)
        with pytest.raises(MalformedTokenError):
            r.verify_token(f"{deep_header}.{b64j(claims())}.{b64u(b'x' * 32)}", at=NOW)
        deep_payload = b64u(b'{"a":' * 10_000 + b"1" + b"}" * 10_000)
        head = b64j({"alg": "HS256", "kid": "k-HS256"})
        sig = hmac.new(keys.private["HS256"], f"{head}.{deep_payload}".encode(), hashlib.sha256).digest()
        with pytest.raises(MalformedTokenError):
            r.verify_token(f"{head}.{deep_payload}.{b64u(sig)}", at=NOW)
        dup = hs256(b64u(b'{"sub":"a","sub":"b","exp":1900000000}'), {"alg": "HS256", "kid": "k-HS256"},
                    keys.private["HS256"])
        with pytest.raises(MalformedTokenError):
            r.verify_token(dup, at=NOW)


# ---- configuration ---------------------------------------------------------------------------

def test_weak_and_ambiguous_keys_are_refused(keys: Keys) -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    jwk = json.loads(RSAAlgorithm.to_jwk(weak.public_key()))
    jwk.update(alg="RS256", kid="weak")
    bad_configs = [
        ({"tokens": {"jwks": {"keys": [jwk]}}}, "2048"),
        ({"allow_inline_secrets": True, "tokens": {"keys": [{"kid": "h", "alg": "HS256", "secret": {"value": "short"}}]}}, "32"),
        ({"allow_inline_secrets": True, "tokens": {"keys": [{"kid": "h", "alg": "HS512", "secret": {"value": "x" * 63}}]}}, "64"),
        ({"tokens": {"jwks": {"keys": [dict(keys.jwk["RS256"], alg=None)]}}}, "inline"),
        ({"allow_inline_secrets": True, "tokens": {"jwks": {"keys": [{k: v for k, v in keys.jwk["RS256"].items() if k != "alg"}]}}}, "alg"),
        ({"tokens": {"keys": [{"kid": "p", "alg": "HS256", "pem": keys.public_pem("RS256").decode()}]}}, "secret"),
        ({"tokens": {"keys": [{"kid": "p", "alg": "ES256", "pem": keys.public_pem("RS256").decode()}]}}, "EC"),
        ({"allow_inline_secrets": True, "tokens": {"keys": [{"kid": "p", "alg": "HS256",
                                                             "secret": {"value": keys.public_pem("RS256").decode()}}]}}, "PEM"),
        ({"tokens": {"keys": [{"kid": "p", "alg": "none", "pem": keys.public_pem("RS256").decode()}]}}, "none"),
        ({"tokens": {"keys": []}}, "at least one key"),
        ({"tokens": {"keys": [{"kid": "p", "alg": "RS256", "pem": keys.public_pem("RS256").decode()}], "leeway": 30}}, "unknown field tokens.leeway"),
        ({"tokens": {"keys": [{"kid": "p", "alg": "RS256", "pem": keys.public_pem("RS256").decode()},
                              {"kid": "p", "alg": "RS256", "pem": keys.public_pem("RS256").decode()}]}}, "two keys"),
    ]
    for cfg, fragment in bad_configs:
        with pytest.raises(ConfigError) as ei:
            bitsec.Runtime(cfg)
        assert fragment in str(ei.value), (fragment, str(ei.value))
        assert "BEGIN" not in str(ei.value)


def test_audience_is_refused_when_the_runtime_expects_none(keys: Keys) -> None:
    with bitsec.Runtime({"allow_inline_secrets": True, "tokens": {"jwks": {"keys": [keys.jwk["HS256"]]}}}) as r:
        assert r.verify_token(pyjwt_sign(keys, "HS256", claims(aud=None, iss=None)), at=NOW)
        with pytest.raises(WrongAudienceError):
            r.verify_token(pyjwt_sign(keys, "HS256", claims()), at=NOW)


def test_no_kid_only_when_one_key_applies(keys: Keys) -> None:
    cfg = {"allow_inline_secrets": True,
           "tokens": {"jwks": {"keys": [keys.jwk["HS256"], keys.jwk["RS256"], keys.jwk["RS384"]]}, "audience": AUD}}
    with bitsec.Runtime(cfg) as r:
        assert r.verify_token(jwt.encode(claims(), keys.private["HS256"], algorithm="HS256"), at=NOW)
        assert r.verify_token(jwt.encode(claims(), keys.private["RS256"], algorithm="RS256"), at=NOW)
    cfg["tokens"]["jwks"]["keys"].append(dict(keys.jwk["RS256"], kid="second"))
    with bitsec.Runtime(cfg) as r:
        with pytest.raises(UnknownKeyError):
            r.verify_token(jwt.encode(claims(), keys.private["RS256"], algorithm="RS256"), at=NOW)


def test_iss_aud_and_kid_are_compared_byte_for_byte(keys: Keys) -> None:
    # RFC 7519 section 2: StringOrURI values are compared with no transformation or
    # canonicalisation. An NFD "cafe\u0301" is canonically equivalent to the NFC "caf\u00e9"
    # (and was accepted for it), but it is a different audience, issuer and kid.
    nfc_iss, nfd_iss = ISS + "/\u00e9", ISS + "/e\u0301"
    nfc_aud, nfd_aud = "caf\u00e9-api", "cafe\u0301-api"
    key = keys.private["HS256"]
    cfg = {"allow_inline_secrets": True,
           "tokens": {"jwks": {"keys": [dict(keys.jwk["HS256"], kid="cl\u00e9")]}, "issuer": nfc_iss, "audience": nfc_aud}}
    with bitsec.Runtime(cfg) as r:
        def sign(kid: str = "cl\u00e9", **c: Any) -> str:
            return hs256(claims(**{"iss": nfc_iss, "aud": nfc_aud, **c}), {"alg": "HS256", "kid": kid}, key)

        assert r.verify_token(sign(), at=NOW)
        with pytest.raises(WrongIssuerError):
            r.verify_token(sign(iss=nfd_iss), at=NOW)
        with pytest.raises(WrongAudienceError):
            r.verify_token(sign(aud=nfd_aud), at=NOW)
        with pytest.raises(WrongAudienceError):
            r.verify_token(sign(aud=["other", nfd_aud]), at=NOW)
        assert r.verify_token(sign(aud=["other", nfc_aud]), at=NOW)
        with pytest.raises(UnknownKeyError):
            r.verify_token(sign(kid="cle\u0301"), at=NOW)


def test_typ_and_required_claims(keys: Keys) -> None:
    with bitsec.Runtime(config(keys, typ="at+jwt", required_claims=["tenant_id"])) as r:
        ok = pyjwt_sign(keys, "HS256", claims(), {"typ": "application/at+jwt"})
        assert r.verify_token(ok, at=NOW)
        with pytest.raises(WrongTokenTypeError):
            r.verify_token(pyjwt_sign(keys, "HS256", claims()), at=NOW)
        # The typ header is judged only once the signature verified: no unauthenticated oracle.
        with pytest.raises(InvalidSignatureError):
            r.verify_token(hs256(claims(), {"alg": "HS256", "kid": "k-HS256", "typ": "JWT"}, b"w" * 32), at=NOW)
        with pytest.raises(MissingClaimError):
            r.verify_token(pyjwt_sign(keys, "HS256", claims(tenant_id=None), {"typ": "at+jwt"}), at=NOW)


# ---- pairs, refresh, revocation --------------------------------------------------------------

def test_pair_and_refresh(keys: Keys) -> None:
    with bitsec.Runtime(config(keys, issuing={"kid": "k-RS256"})) as r:
        pair = r.issue_token_pair({"sub": "u-9", "role": "operator", "scope": "inspections:read", "tenant_id": "t"}, at=NOW)
        assert pair["token_type"] == "Bearer" and pair["expires_in"] == 1800 and pair["refresh_expires_in"] == 604800
        access = r.verify_token(pair["access_token"], at=NOW)
        assert access["type"] == "access" and access["exp"] == NOW + 1800 and access["iss"] == ISS and access["aud"] == AUD
        assert access["session_id"] == pair["session_id"] and len(access["jti"]) == 22
        refresh_claims = jwt.decode(pair["refresh_token"], keys.public["RS256"], algorithms=["RS256"], audience=AUD,
                                    options={"verify_exp": False, "verify_iat": False})
        assert refresh_claims["exp"] == NOW + 604800 and refresh_claims["jti"] != access["jti"]
        with pytest.raises(WrongTokenTypeError):
            r.verify_token(pair["refresh_token"], at=NOW)
        with pytest.raises(WrongTokenTypeError):
            r.refresh_token_pair(pair["access_token"], at=NOW)
        new = r.refresh_token_pair(pair["refresh_token"], at=NOW + 60)
        assert new["session_id"] == pair["session_id"]
        assert r.verify_token(new["access_token"], at=NOW + 60)["role"] == "operator"
        with pytest.raises(bitsec.InvalidArgumentError):
            r.issue_token_pair({"sub": "x", "exp": 1}, at=NOW)
        # Revoking an access token by the token itself.
        assert r.revoke_token(new["access_token"], at=NOW + 60) is True
        with pytest.raises(RevokedTokenError):
            r.verify_token(new["access_token"], at=NOW + 60)
        assert r.revoke_token(new["access_token"], at=NOW + 60) is False
        # Logout: the refresh token itself can be revoked, then it no longer refreshes.
        assert r.revoke_token(new["refresh_token"], at=NOW + 60) is True
        with pytest.raises(RevokedTokenError):
            r.refresh_token_pair(new["refresh_token"], at=NOW + 61)
        # A forged "refresh" token is not revocable: its signature is checked first.
        forged = new["refresh_token"][:-4] + ("AAAA" if not new["refresh_token"].endswith("AAAA") else "BBBB")
        with pytest.raises((InvalidSignatureError, MalformedTokenError)):
            r.revoke_token(forged, at=NOW + 60)
        # The spent refresh token presented again: refused (and its session's family revoked:
        # last, since that ends every token of the session).
        with pytest.raises(RevokedTokenError):
            r.refresh_token_pair(pair["refresh_token"], at=NOW + 61)


def test_concurrent_refresh_exchanges_exactly_once(keys: Keys) -> None:
    with bitsec.Runtime(config(keys, issuing={"kid": "k-ES256"})) as r:
        pair = r.issue_token_pair({"sub": "u"})
        results: list[str] = []
        def go() -> None:
            try:
                r.refresh_token_pair(pair["refresh_token"])
                results.append("ok")
            except RevokedTokenError:
                results.append("revoked")
        threads = [threading.Thread(target=go) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(results) == ["ok"] + ["revoked"] * 7


def test_in_process_revocation_is_bounded(keys: Keys) -> None:
    with bitsec.Runtime(config(keys, revocation={"max_entries": 3})) as r:
        for i in range(3):
            assert r.revoke_token(jti=f"j{i}", exp=NOW + 100, at=NOW)
        # Full: no error and nothing forgotten. A bare jti has no session or subject to
        # widen to: every token issued up to now is revoked instead (fail closed).
        assert r.revoke_token(jti="j3", exp=NOW + 100, at=NOW)
        with pytest.raises(RevokedTokenError):
            r.verify_token(pyjwt_sign(keys, "HS256", claims(jti="j3")), at=NOW)
        for i in range(3):
            assert r.is_token_revoked(f"j{i}", at=NOW)
        # Once those tokens are expired (exp + leeway), their entries make room.
        assert r.revoke_token(jti="j4", exp=NOW + 1000, at=NOW + 131)
        assert r.is_token_revoked("j4", at=NOW + 131) and not r.is_token_revoked("j0", at=NOW + 131)


def test_revocation_in_redis_is_shared(keys: Keys, redis_config: dict, redis_server: Any) -> None:
    import redis as redis_py
    prefix = f"tok{time.time_ns()}:"
    cfg = dict(config(keys), redis=dict(redis_config["redis"], key_prefix=prefix))
    with bitsec.Runtime(cfg) as a, bitsec.Runtime(cfg) as b:
        assert a.describe()["sections"]["tokens"]["revocation"] == "redis"
        now = int(time.time())
        token = pyjwt_sign(keys, "ES256", claims(jti="shared-1", iat=now, exp=now + 600))
        assert b.verify_token(token)
        assert a.revoke_token(token) is True
        with pytest.raises(RevokedTokenError):
            b.verify_token(token)
        client = redis_py.Redis(host="127.0.0.1", port=redis_server.port)
        # The keys of a subject share its hash tag (one cluster slot per verification).
        key = f"{prefix}revoked:{{user-1}}:j:shared-1"
        assert client.exists(key) == 1
        assert 600 < client.ttl(key) <= 630  # exp - now + leeway
        assert b.revoke_token(token) is False


def test_redis_outage_is_an_error_not_a_decision(keys: Keys, fresh_redis: Any) -> None:
    cfg = dict(config(keys), redis={"host": "127.0.0.1", "port": fresh_redis.port, "command_timeout_ms": 200})
    with bitsec.Runtime(cfg) as r:
        now = int(time.time())
        token = pyjwt_sign(keys, "HS256", claims(iat=now, exp=now + 600))
        assert r.verify_token(token)
        fresh_redis.stop()
        with pytest.raises(BackendUnavailableError):
            r.verify_token(token)
        with pytest.raises(BackendUnavailableError):
            r.revoke_token(jti="x", exp=now + 600)


# ---- cache and concurrency -----------------------------------------------------------------

def test_cache_still_checks_time_and_revocation(keys: Keys) -> None:
    with bitsec.Runtime(config(keys, cache_size=8)) as r:
        token = pyjwt_sign(keys, "RS256", claims(jti="cached"))
        for _ in range(3):
            assert r.verify_token(token, at=NOW)["jti"] == "cached"
        with pytest.raises(ExpiredTokenError):
            r.verify_token(token, at=NOW + 5000)
        with pytest.raises(TokenNotYetValidError):
            r.verify_token(pyjwt_sign(keys, "RS256", claims(nbf=NOW + 100)), at=NOW)
        r.revoke_token(jti="cached", exp=NOW + 1800, at=NOW)
        with pytest.raises(RevokedTokenError):
            r.verify_token(token, at=NOW)
        # A token differing in one signature byte is not a cache hit.
        tampered = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
        with pytest.raises((InvalidSignatureError, MalformedTokenError)):
            r.verify_token(tampered, at=NOW)
        # Many distinct tokens: bounded, and each still verifies.
        for i in range(40):
            assert r.verify_token(pyjwt_sign(keys, "HS256", claims(jti=f"c{i}")), at=NOW)["jti"] == f"c{i}"


def test_eight_threads_verify_while_keys_reload(keys: Keys) -> None:
    other = ec.generate_private_key(ec.SECP256R1())
    other_jwk = dict(json.loads(ECAlgorithm.to_jwk(other.public_key())), alg="ES256", kid="rotating")
    set_a = {"keys": [keys.jwk["RS256"], keys.jwk["ES256"]]}
    set_b = {"keys": [keys.jwk["RS256"], keys.jwk["ES256"], other_jwk]}
    with bitsec.Runtime({"allow_inline_secrets": True, "tokens": {"jwks": set_a, "audience": AUD, "issuer": ISS}}) as r:
        tokens = [pyjwt_sign(keys, "RS256", claims(jti=f"t{i}")) for i in range(4)] + \
                 [pyjwt_sign(keys, "ES256", claims(jti=f"e{i}")) for i in range(4)]
        rotating = jwt.encode(claims(jti="rot"), other, algorithm="ES256", headers={"kid": "rotating"})
        stop = threading.Event()
        errors: list[BaseException] = []
        counts = [0] * 8

        def verifier(i: int) -> None:
            try:
                while not stop.is_set():
                    assert r.verify_token(tokens[i], at=NOW)["sub"] == "user-1"
                    try:
                        r.verify_token(rotating, at=NOW)
                    except UnknownKeyError:
                        pass
                    counts[i] += 1
            except BaseException as e:  # noqa: BLE001
                errors.append(e)

        threads = [threading.Thread(target=verifier, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for k in range(200):
            r.reload_token_keys(set_b if k % 2 else set_a)
        stop.set()
        for t in threads:
            t.join()
        assert not errors, errors[:3]
        assert all(c > 0 for c in counts)
        r.reload_token_keys(set_b)
        assert r.verify_token(rotating, at=NOW)["jti"] == "rot"
        with pytest.raises(ConfigError):
            r.reload_token_keys({"keys": [{"kty": "RSA"}]})
        assert r.verify_token(rotating, at=NOW)["jti"] == "rot"  # a failed reload changes nothing


def test_revocation_under_concurrency(keys: Keys) -> None:
    with bitsec.Runtime(config(keys)) as r:
        token = pyjwt_sign(keys, "HS256", claims(jti="conc"))
        revoked = threading.Event()
        bad: list[str] = []

        def verifier() -> None:
            for _ in range(2000):
                seen = revoked.is_set()
                try:
                    r.verify_token(token, at=NOW)
                    if seen:
                        bad.append("valid after revocation")
                except RevokedTokenError:
                    pass

        threads = [threading.Thread(target=verifier) for _ in range(8)]
        for t in threads:
            t.start()
        time.sleep(0.01)
        r.revoke_token(jti="conc", exp=NOW + 1800, at=NOW)
        revoked.set()
        for t in threads:
            t.join()
        assert not bad
        with pytest.raises(RevokedTokenError):
            r.verify_token(token, at=NOW)


# ---- JWKS refresher --------------------------------------------------------------------------

class _JWKSHandler(http.server.BaseHTTPRequestHandler):
    body = b"{}"
    hits = 0

    def do_GET(self) -> None:  # noqa: N802
        type(self).hits += 1
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: Any) -> None:
        pass


def test_jwks_refresher(keys: Keys) -> None:
    handler = type("H", (_JWKSHandler,), {"body": json.dumps({"keys": [keys.jwk["ES256"]]}).encode(), "hits": 0})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/jwks.json"
        with bitsec.Runtime({"allow_inline_secrets": True, "tokens": {"keys": [
                {"kid": "static", "alg": "HS256", "secret": {"value": "z" * 32}}], "audience": AUD}}) as r:
            ref = JWKSRefresher(r, url, ttl=3600, unknown_kid_cooldown=60)
            token = pyjwt_sign(keys, "ES256", claims())
            assert ref.verify_token(token, at=NOW)["sub"] == "user-1"
            assert handler.hits == 1
            for _ in range(5):
                ref.verify_token(token, at=NOW)
            assert handler.hits == 1  # within the TTL
            # The static key survives reloads.
            assert r.verify_token(jwt.encode(claims(), "z" * 32, algorithm="HS256", headers={"kid": "static"}), at=NOW)
            # Rotation: a new kid triggers one refetch.
            new = ed25519.Ed25519PrivateKey.generate()
            new_jwk = dict(json.loads(OKPAlgorithm.to_jwk(new.public_key())), alg="EdDSA", kid="rotated")
            handler.body = json.dumps({"keys": [keys.jwk["ES256"], new_jwk]}).encode()
            rotated = jwt.encode(claims(), new, algorithm="EdDSA", headers={"kid": "rotated"})
            assert ref.verify_token(rotated, at=NOW)["sub"] == "user-1"
            assert handler.hits == 2
            # Random kids: at most one fetch per cooldown.
            for i in range(20):
                bogus = jwt.encode(claims(), new, algorithm="EdDSA", headers={"kid": f"random-{i}"})
                with pytest.raises(UnknownKeyError):
                    ref.verify_token(bogus, at=NOW)
            assert handler.hits == 2
            # TTL expiry refetches.
            ref._next_refresh = 0.0
            ref.verify_token(token, at=NOW)
            assert handler.hits == 3
            # A broken JWKS keeps the current keys.
            handler.body = b"not json"
            ref._next_refresh = 0.0
            assert ref.verify_token(rotated, at=NOW)["sub"] == "user-1"
            assert ref.last_error is not None
    finally:
        server.shutdown()
        server.server_close()


# ---- the verify fast path (tokperf) ----------------------------------------------------------

def test_verify_fast_path_passes_exactly_the_declared_types() -> None:
    # verify_token calls bitsec_verify_token without ctypes' conversion; what it passes must be
    # of exactly the declared argtypes (bytes standing for c_char_p).
    import ctypes

    from bitsec import _native
    from bitsec.tokens import FAST_ARGTYPES
    for name, fast in FAST_ARGTYPES.items():
        restype, declared = _native.PROTOTYPES[name]
        assert len(fast) == len(declared)
        for f, d in zip(fast, declared):
            if f == "byref":
                assert d._type_ in (ctypes.c_size_t, ctypes.c_int32)
            elif f == "buffer":
                assert d is ctypes.c_char_p
            elif d is ctypes.c_void_p:
                assert f is ctypes.c_void_p
            else:
                assert f is d, (name, f, d)


def test_memoised_claims_still_get_a_decision_every_call(keys: Keys) -> None:
    with bitsec.Runtime(config(keys)) as r:
        token = pyjwt_sign(keys, "HS256", claims(jti="memo-1", scp=["x"], roles=["a", "b"]))
        c1 = r.verify_token(token, at=NOW)
        # str and bytes forms, explicit instants (int and float), the same claims object.
        assert r.verify_token(token.encode(), at=float(NOW) + 0.5)["jti"] == "memo-1"
        assert r.verify_token(token, at=NOW) is c1
        assert c1.subject == "user-1" and c1.tenant_id == "t-1" and c1.expires_at == NOW + 1800
        # scope wins over scp: the first scope claim present, as the permission checker reads them.
        assert c1.scopes == ("inspections:read", "inspections:write") and c1.roles == ("manager", "a", "b")
        assert dict(c1) == claims(jti="memo-1", scp=["x"], roles=["a", "b"])
        with pytest.raises(ExpiredTokenError):
            r.verify_token(token, at=NOW + 1800 + 30)
        assert r.revoke_token(token, at=NOW)
        with pytest.raises(TokenError) as ei:
            r.verify_token(token, at=NOW)
        assert ei.value.reason == "revoked"
        with pytest.raises(TypeError):
            r.verify_token(12345)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            r.verify_token(bytearray(token.encode()))  # type: ignore[arg-type]
    with pytest.raises(bitsec.ClosedError):
        r.verify_token(token, at=NOW)


def test_lazy_claims_with_awkward_strings(keys: Keys) -> None:
    with bitsec.Runtime(config(keys)) as r:
        tricky = {"sub": 'a,"claims":{"x":1}', "tenant_id": "t\\", "jti": "é\u2028", "note": ',"claims":'}
        token = pyjwt_sign(keys, "HS256", claims(**tricky))
        c = r.verify_token(token, at=NOW)
        assert c.subject == tricky["sub"] and c.tenant_id == "t\\" and c.jti == "é\u2028"
        assert c["note"] == ',"claims":' and c.to_dict() == claims(**tricky)


# ---- exact time claims and the result document ---------------------------------------------

def test_fractional_time_claims_are_compared_exactly(keys: Keys) -> None:
    """nbf/iat are never accepted before their instant, exp never after; a float ``at`` keeps
    its fraction (bitsec_verify_token_at), an int ``at`` is that exact second."""
    with bitsec.Runtime(config(keys, leeway_seconds=0)) as r:
        tok = pyjwt_sign(keys, "HS256", claims(iat=None, nbf=NOW + 0.5, exp=NOW + 10.5))
        with pytest.raises(TokenNotYetValidError):
            r.verify_token(tok, at=NOW)
        with pytest.raises(TokenNotYetValidError):
            r.verify_token(tok, at=NOW + 0.4)
        assert r.verify_token(tok, at=NOW + 0.6)
        assert r.verify_token(tok, at=NOW + 1)
        assert r.verify_token(tok, at=NOW + 10.4)
        with pytest.raises(ExpiredTokenError):
            r.verify_token(tok, at=NOW + 10.6)
        iat = pyjwt_sign(keys, "HS256", claims(iat=NOW + 0.25))
        with pytest.raises(TokenIssuedInFutureError):
            r.verify_token(iat, at=NOW)
        assert r.verify_token(iat, at=NOW + 0.3)
    with bitsec.Runtime(config(keys, leeway_seconds=2)) as r:
        tok = pyjwt_sign(keys, "HS256", claims(iat=None, nbf=NOW + 0.5))
        with pytest.raises(TokenNotYetValidError):
            r.verify_token(tok, at=NOW - 2)  # nbf - leeway is NOW - 1.5
        assert r.verify_token(tok, at=NOW - 1.4)


def test_token_without_scope_has_no_scopes_and_is_judged_by_its_roles(keys: Keys) -> None:
    policy = {"resources": ["inspections"], "actions": ["read", "write"],
              "roles": {"manager": {"allow": ["inspections:read"]}}}
    cfg = config(keys)
    cfg["permissions"] = {"policy": policy}
    with bitsec.Runtime(cfg) as r:
        c = r.verify_token(pyjwt_sign(keys, "HS256", claims(scope=None)), at=NOW)
        assert c.scopes == ()
        assert "scope" not in c
        assert r.check_permission(c, "inspections:read").allowed
        assert not r.check_permission(c, "inspections:write").allowed
        empty = r.verify_token(pyjwt_sign(keys, "HS256", claims(scope="")), at=NOW)
        assert empty.scopes == ()
        assert r.check_permission(empty, "inspections:read").reason == "scope_missing"


def test_refresh_asks_the_library_for_its_output_size(keys: Keys, monkeypatch: pytest.MonkeyPatch) -> None:
    # The refresh output size depends on tokens.max_token_bytes: the binding asks the library
    # (a one-byte buffer; BITSEC_E_BUFFER_TOO_SMALL reports the size) instead of computing it
    # from a copied default, and a pair larger than the default-sized buffer comes back whole.
    from bitsec import _abi, tokens
    calls: list[tuple[int, int, int]] = []
    real = tokens._refresh

    def recording(*args: object) -> int:
        rc = real(*args)
        n = args[-1]._obj.value  # type: ignore[attr-defined]
        calls.append((int(args[-2]), rc, n))  # type: ignore[call-overload]
        return int(rc)

    monkeypatch.setattr(tokens, "_refresh", recording)
    with bitsec.Runtime(config(keys, issuing={"kid": "k-RS256"}, max_token_bytes=1 << 20)) as r:
        big = "x" * 20000  # each token of the pair is larger than the default max_token_bytes
        pair = r.issue_token_pair({"sub": "u-big", "note": big}, at=NOW)
        new = r.refresh_token_pair(pair["refresh_token"], at=NOW + 60)
        assert r.verify_token(new["access_token"], at=NOW + 60)["note"] == big
    (cap1, rc1, needed), (cap2, rc2, written) = calls
    assert (cap1, rc1) == (1, _abi.BITSEC_E_BUFFER_TOO_SMALL)
    assert cap2 == needed and rc2 == _abi.BITSEC_OK and 0 < written <= needed
