"""`make demo`: every bitsec operation, in process, on the embedded default (no Redis).

Run from the repository root (the demo configuration's paths are relative to it). Each step
prints what it did and what bitsec decided; a step whose result is not the expected one
stops the demo with an error.
"""
from __future__ import annotations

import json
import sys
import urllib.parse

import bitsec


def step(title: str) -> None:
    print(f"\n-- {title}")


def expect(cond: bool, what: str) -> None:
    if not cond:
        raise SystemExit(f"demo: unexpected result: {what}")


def main(config: str) -> None:
    print(f"bitsec {bitsec.library_version()} loaded from {bitsec.library_path()}")
    with bitsec.Runtime(config) as rt:
        sections = rt.describe()["sections"]
        print("configured:", ", ".join(k for k, v in sections.items() if v is not None))

        step("tokens: issue an access/refresh pair (HS256, 30 min / 7 days) and verify it")
        pair = rt.issue_token_pair({"sub": "alice", "roles": ["quality_engineer"], "tenant_id": "fab-1",
                                    "scope": "inspections:read inspections:write reports:read"})
        claims = rt.verify_token(pair["access_token"])
        print(f"   access token verified: sub={claims.subject} roles={list(claims.roles)} tenant={claims.tenant_id}")
        try:
            rt.verify_token(pair["access_token"], at=claims.expires_at + 3600)
            expect(False, "an expired token verified")
        except bitsec.ExpiredTokenError as e:
            print(f"   one hour after expiry: refused, reason={e.reason!r}: {e}")
        tampered = pair["access_token"][:-2] + ("AA" if not pair["access_token"].endswith("AA") else "BB")
        try:
            rt.verify_token(tampered)
            expect(False, "a tampered token verified")
        except bitsec.TokenError as e:
            print(f"   tampered signature: refused, reason={e.reason!r}")

        step("permissions: ADR-007 roles, scopes and tenants")
        for resource, action, ctx in [("inspections", "create", {"tenant_id": "fab-1"}),
                                      ("inspections", "delete", {"tenant_id": "fab-1"}),
                                      ("inspections", "read", {"tenant_id": "fab-2"}),
                                      ("system", "execute", None)]:
            d = rt.check_permission(claims, resource, action, ctx)
            print(f"   {resource}:{action:<7} tenant={str((ctx or {}).get('tenant_id')):<6} -> "
                  f"{'allow' if d else 'deny '} ({d.reason})")

        step("rate limits: the ADR-007 'auth' category, 10 per minute")
        t0 = 1_800_000_000
        decisions = [rt.rate_limit_take("203.0.113.7", "auth", at=t0) for _ in range(11)]
        expect(all(d.allowed for d in decisions[:10]) and not decisions[10].allowed, "10 allowed then denied")
        print(f"   10 allowed, the 11th denied: {decisions[10].headers()}")

        step("brute force: 5 failed logins in an hour block the key for an hour")
        for _ in range(5):
            status = rt.bruteforce_record_failure("203.0.113.7", at=t0)
        print(f"   blocked={status.blocked} retry_after={status.retry_after}s")

        step("MFA: enrol (secret sealed with field encryption), verify, refuse a replay")
        enrolment = rt.totp_enroll("alice", "alice@bitcorp.example")
        secret = urllib.parse.parse_qs(urllib.parse.urlparse(enrolment.uri).query)["secret"][0]
        print(f"   provisioning URI: {enrolment.uri.split('secret=')[0]}secret=…")
        code = rt.totp_now(secret)
        first = rt.totp_verify_sealed(enrolment.sealed, code, "alice")
        again = rt.totp_verify_sealed(enrolment.sealed, code, "alice")
        expect(bool(first) and not again, "accepted once, then replayed")
        print(f"   code {code}: first use {first.reason}, second use {again.reason}")

        step("field encryption: AES-256-GCM bound to its row, column and tenant")
        ctx_row = bitsec.field_context("equipment_records.serial_number", 42, "fab-1")
        token = rt.encrypt_field(b"SN-2026-000123", ctx_row)
        print(f"   stored: {token[:48]}… (key id {bitsec.field_key_id(token)})")
        print(f"   read back: {rt.decrypt_field(token, ctx_row)!r}")
        try:
            rt.decrypt_field(token, bitsec.field_context("equipment_records.serial_number", 43, "fab-1"))
            expect(False, "a ciphertext decrypted under another row's context")
        except bitsec.FieldDecryptError as e:
            print(f"   copied to row 43: refused, reason={e.reason!r}")

        step("audit: events, the hash chain, Prometheus counters")
        seq = rt.audit_emit({"type": "data_access", "subtype": "read", "actor": "alice", "tenant": "fab-1",
                             "resource": "equipment_records", "action": "read", "result": "success"})
        rt.audit_flush()
        print(f"   emitted event seq={seq}; automatic events were recorded for the refusals above")
        metrics = [l for l in rt.metrics_text().splitlines() if l.startswith(("authentication_", "authorization_", "rate_limit_", "mfa_", "data_access_"))]
        print("   Prometheus counters (excerpt):")
        for line in metrics[:10]:
            print(f"     {line}")
    report = bitsec.audit_verify(["build/demo/audit.jsonl"])
    expect(report.intact, "the audit chain verifies")
    print(f"   audit chain after close: intact, {report.records} records ({report.chain})")
    print("\ndemo: every step behaved as expected")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "examples/config/demo.json")
