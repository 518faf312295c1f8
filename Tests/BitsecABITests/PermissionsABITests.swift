// The permissions functions through the exported C symbols only.
import Testing
import Glibc
import Dispatch
import Bitsec

private let E_NOT_FOUND = BitsecABI.BITSEC_E_NOT_FOUND
private let GRANTED = BitsecABI.BITSEC_PERM_GRANTED, NO_GRANT = BitsecABI.BITSEC_PERM_NO_GRANT, DENIED_BY_RULE = BitsecABI.BITSEC_PERM_DENIED_BY_RULE, OWNER_ONLY = BitsecABI.BITSEC_PERM_OWNER_ONLY
private let TENANT_MISMATCH = BitsecABI.BITSEC_PERM_TENANT_MISMATCH, SCOPE_MISSING = BitsecABI.BITSEC_PERM_SCOPE_MISSING, UNKNOWN_RESOURCE = BitsecABI.BITSEC_PERM_UNKNOWN_RESOURCE, UNKNOWN_ACTION = BitsecABI.BITSEC_PERM_UNKNOWN_ACTION

private let policy = #"""
{"resources": ["docs", "system"], "actions": ["read", "write"],
 "roles": {"reader": {"allow": ["*:read"]},
           "writer": {"inherits": ["reader"], "allow": [{"permission": "docs:write", "owner_only": true}], "deny": ["system:*"]}}}
"""#

private func openPermissions(_ p: String = policy) -> OpaquePointer? {
    let (rc, rt) = open(#"{"permissions": {"policy": \#(p)}}"#)
    #expect(rc == OK, "\(lastError())")
    return rt
}

/// Calls bitsec_check_permission with Swift byte arrays.
private func check(_ rt: OpaquePointer?, _ principal: [UInt8], _ permission: String, _ context: [UInt8]? = nil) -> (Int32, UInt64) {
    var d: UInt64 = 0xFFFF
    let perm = Array(permission.utf8)
    let rc = principal.withUnsafeBufferPointer { pb in
        perm.withUnsafeBufferPointer { mb in
            (context ?? []).withUnsafeBufferPointer { cb in
                bitsec_check_permission(rt, UnsafeRawPointer(pb.baseAddress)?.assumingMemoryBound(to: CChar.self), UInt(pb.count),
                                        UnsafeRawPointer(mb.baseAddress)?.assumingMemoryBound(to: CChar.self), UInt(mb.count),
                                        context == nil ? nil : UnsafeRawPointer(cb.baseAddress)?.assumingMemoryBound(to: CChar.self),
                                        UInt(context?.count ?? 0), &d)
            }
        }
    }
    return (rc, d)
}

private func packed(_ fields: String...) -> [UInt8] {
    var out: [UInt8] = []
    for (i, f) in fields.enumerated() {
        if i > 0 { out.append(0) }
        out += Array(f.utf8)
    }
    return out
}

private func reason(_ d: UInt64) -> Int32 { Int32((d >> 8) & 0xFF) }
private func rule(_ d: UInt64) -> Int64 { Int64(d >> 32) - 1 }

private func ruleText(_ rt: OpaquePointer?, _ d: UInt64) -> (Int32, String) {
    var buf = [CChar](repeating: 0, count: 256)
    var n: UInt = 0
    let rc = bitsec_permission_rule(rt, d, &buf, UInt(buf.count), &n)
    return (rc, rc == OK ? String(cString: buf) : "")
}

@Suite struct PermissionsABITests {
    @Test func decisionsAreResultsNotErrors() {
        let rt = openPermissions()
        defer { bitsec_runtime_close(rt) }
        let alice = packed("alice", "writer", "acme", "eng")
        var (rc, d) = check(rt, alice, "docs:read")
        #expect(rc == OK && d & 1 == 1 && reason(d) == GRANTED)
        #expect(ruleText(rt, d) == (OK, "reader: allow *:read"))
        (rc, d) = check(rt, alice, "system:read")
        #expect(rc == OK && d & 1 == 0 && reason(d) == DENIED_BY_RULE)
        #expect(ruleText(rt, d) == (OK, "writer: deny system:*"))
        (rc, d) = check(rt, alice, "docs:write")
        #expect(rc == OK && reason(d) == OWNER_ONLY)
        (rc, d) = check(rt, alice, "docs:write", packed("alice", "", ""))
        #expect(rc == OK && reason(d) == GRANTED)
        (rc, d) = check(rt, alice, "docs:read", packed("", "globex", ""))
        #expect(rc == OK && reason(d) == TENANT_MISMATCH)
        (rc, d) = check(rt, packed("bob", "reader", "", ""), "docs:write")
        #expect(rc == OK && reason(d) == NO_GRANT && rule(d) == -1)
        #expect(ruleText(rt, d).0 == E_NOT_FOUND)
        (rc, d) = check(rt, alice, "nope:read")
        #expect(rc == OK && reason(d) == UNKNOWN_RESOURCE)
        (rc, d) = check(rt, alice, "docs:fly")
        #expect(rc == OK && reason(d) == UNKNOWN_ACTION)
        // Five fields: scopes present.
        (rc, d) = check(rt, packed("alice", "writer", "", "", "docs:write"), "docs:read")
        #expect(rc == OK && reason(d) == SCOPE_MISSING)
        (rc, d) = check(rt, packed("alice", "writer", "", "", "docs:read openid"), "docs:read")
        #expect(rc == OK && reason(d) == GRANTED)
    }

    @Test func reasonTexts() {
        let expected = [1: "granted", 2: "no_grant", 3: "denied_by_rule", 4: "condition_failed:owner_only",
                        5: "condition_failed:department", 6: "tenant_mismatch", 7: "scope_missing",
                        8: "unknown_resource", 9: "unknown_action"]
        for (code, text) in expected { #expect(String(cString: bitsec_permission_reason_name(Int32(code))) == text) }
        for code: Int32 in [0, 10, 255, 256, -1, Int32.max, Int32.min] {
            #expect(String(cString: bitsec_permission_reason_name(code)) == "unknown")
        }
    }

    @Test func badArgumentsGetStatusCodes() {
        let rt = openPermissions()
        defer { bitsec_runtime_close(rt) }
        var d: UInt64 = 0
        let p = packed("a", "reader", "", "")
        #expect(check(rt, p, "docsread").0 == E_INVALID)  // no ':'
        #expect(check(rt, packed("a", "reader", ""), "docs:read").0 == E_INVALID)  // 3 fields
        #expect(check(rt, packed("a", "reader", "", "", "", ""), "docs:read").0 == E_INVALID)  // 6 fields
        #expect(check(rt, p, "docs:read", packed("x", "y")).0 == E_INVALID)  // context of 2 fields
        #expect(check(rt, [], "docs:read").0 == E_INVALID)  // empty principal: 1 field
        #expect(bitsec_check_permission(rt, nil, 5, "docs:read", 9, nil, 0, &d) == E_INVALID)
        #expect(bitsec_check_permission(rt, "a\0b\0c\0d", 7, nil, 9, nil, 0, &d) == E_INVALID)
        #expect(bitsec_check_permission(rt, "a\0b\0c\0d", 7, "docs:read", 9, nil, 0, nil) == E_INVALID)
        #expect(bitsec_check_permission(rt, "a\0b\0c\0d", 7, "docs:read", UInt.max, nil, 0, &d) == E_TOO_LARGE)
        #expect(bitsec_check_permission(rt, "a\0b\0c\0d", UInt(Int.max) + 1, "docs:read", 9, nil, 0, &d) == E_TOO_LARGE)
        #expect(bitsec_check_permission(rt, "a\0b\0c\0d", 7, "docs:read", 9, "x", UInt.max, &d) == E_TOO_LARGE)
        #expect(bitsec_check_permission(nil, "a\0b\0c\0d", 7, "docs:read", 9, nil, 0, &d) == E_INVALID)
        // Invalid UTF-8 is just bytes that match no name: a denial, not a crash.
        let (rc, dd) = check(rt, [0xFF, 0, 0xFE, 0, 0, 0], "docs:read")
        #expect(rc == OK && reason(dd) == NO_GRANT)
        // Not configured.
        let (orc, other) = open("{}")
        #expect(orc == OK)
        #expect(bitsec_check_permission(other, "a\0b\0c\0d", 7, "docs:read", 9, nil, 0, &d) == E_NOT_CONFIGURED)
        #expect(bitsec_permission_policy_load(other, "{}", 2) == E_NOT_CONFIGURED)
        bitsec_runtime_close(other)
        #expect(bitsec_check_permission(other, "a\0b\0c\0d", 7, "docs:read", 9, nil, 0, &d) == E_CLOSED)
    }

    @Test func batch() {
        let rt = openPermissions()
        defer { bitsec_runtime_close(rt) }
        let list = "docs:read, system:read\ndocs:write nope:x"
        var out = [UInt64](repeating: 0, count: 4)
        var n: UInt = 0
        #expect(bitsec_check_permissions(rt, "a\0writer\0\0", 10, list, UInt(list.utf8.count), nil, 0, &out, 4, &n) == OK)
        #expect(n == 4)
        #expect(out.map(reason) == [GRANTED, DENIED_BY_RULE, OWNER_ONLY, UNKNOWN_RESOURCE])
        // Too small: the count needed comes back.
        n = 0
        #expect(bitsec_check_permissions(rt, "a\0writer\0\0", 10, list, UInt(list.utf8.count), nil, 0, &out, 2, &n) == E_BUFFER)
        #expect(n == 4)
        #expect(bitsec_check_permissions(rt, "a\0writer\0\0", 10, list, UInt(list.utf8.count), nil, 0, nil, 0, &n) == E_BUFFER)
        #expect(bitsec_check_permissions(rt, "a\0writer\0\0", 10, "docs", 4, nil, 0, &out, 4, &n) == E_INVALID)
        #expect(bitsec_check_permissions(rt, "a\0writer\0\0", 10, list, UInt(list.utf8.count), nil, 0, &out, 4, nil) == E_INVALID)
        // An empty list decides nothing.
        #expect(bitsec_check_permissions(rt, "a\0writer\0\0", 10, nil, 0, nil, 0, nil, 0, &n) == OK)
        #expect(n == 0)
        // More than the batch limit.
        let big = Array(repeating: "docs:read", count: 4097).joined(separator: " ")
        var many = [UInt64](repeating: 0, count: 4097)
        #expect(bitsec_check_permissions(rt, "a\0writer\0\0", 10, big, UInt(big.utf8.count), nil, 0, &many, 4097, &n) == E_TOO_LARGE)
    }

    @Test func reloadShadowAndStats() {
        let rt = openPermissions()
        defer { bitsec_runtime_close(rt) }
        let p = packed("a", "reader", "", "")
        let (_, before) = check(rt, p, "docs:read")
        let bad = #"{"resources": ["d"], "actions": ["r"], "roles": {"a": {"inherits": ["b"]}, "b": {"inherits": ["a"]}}}"#
        #expect(bitsec_permission_policy_load(rt, bad, UInt(bad.utf8.count)) == E_CONFIG)
        #expect(lastError().contains("cycle: a -> b -> a"))
        #expect(check(rt, p, "docs:read").1 == before)  // unchanged
        let v2 = #"{"resources": ["docs"], "actions": ["read"], "roles": {"reader": {"deny": ["docs:read"]}}}"#
        #expect(bitsec_permission_shadow_load(rt, v2, UInt(v2.utf8.count)) == OK)
        #expect(check(rt, p, "docs:read").1 & 1 == 1)  // the shadow decides nothing
        var buf = [CChar](repeating: 0, count: 1024)
        var n: UInt = 0
        #expect(bitsec_permission_stats(rt, &buf, UInt(buf.count), &n) == OK)
        var s = String(cString: buf)
        #expect(s.contains(#""shadow_disagreements":1"#))
        #expect(bitsec_permission_stats(rt, &buf, 3, &n) == E_BUFFER)
        #expect(n > 3)
        #expect(bitsec_permission_policy_load(rt, v2, UInt(v2.utf8.count)) == OK)
        #expect(reason(check(rt, p, "docs:read").1) == DENIED_BY_RULE)
        #expect(ruleText(rt, before).0 == E_NOT_FOUND)  // older generation
        #expect(bitsec_permission_shadow_load(rt, nil, 0) == OK)
        #expect(bitsec_permission_stats(rt, &buf, UInt(buf.count), &n) == OK)
        s = String(cString: buf)
        #expect(s.contains(#""shadow":null"#))
        #expect(s.contains(#""reloads":1"#))
    }

    /// 8 threads decide while a 9th reloads: decisions are always one policy's.
    @Test func concurrentReload() {
        nonisolated(unsafe) let rt = openPermissions()
        defer { bitsec_runtime_close(rt) }
        let v2 = #"{"resources": ["docs", "system"], "actions": ["read", "write"], "roles": {"reader": {"allow": ["*:*"]}}}"#
        let bad = ConditionCounter()
        DispatchQueue.concurrentPerform(iterations: 9) { t in
            if t == 8 {
                for i in 0..<100 {
                    let doc = i % 2 == 0 ? v2 : policy
                    if bitsec_permission_policy_load(rt, doc, UInt(doc.utf8.count)) != OK { bad.add() }
                }
                return
            }
            let p = packed("a", "reader", "", "")
            for _ in 0..<3000 {
                let (rc, d) = check(rt, p, "docs:read")
                if rc != OK || reason(d) != GRANTED { bad.add() }
                let (rc2, d2) = check(rt, p, "docs:write")
                if rc2 != OK || !(reason(d2) == GRANTED || reason(d2) == NO_GRANT) { bad.add() }
            }
        }
        #expect(bad.value == 0)
    }
}

final class ConditionCounter: @unchecked Sendable {
    private var n = 0
    private var m = pthread_mutex_t()
    init() { pthread_mutex_init(&m, nil) }
    func add() { pthread_mutex_lock(&m); n += 1; pthread_mutex_unlock(&m) }
    var value: Int { pthread_mutex_lock(&m); defer { pthread_mutex_unlock(&m) }; return n }
}

@Suite struct PermissionsPackedABITests {
    private func packedCheck(_ rt: OpaquePointer?, _ fields: [String]) -> (Int32, UInt64) {
        let bytes = Array(fields.joined(separator: "\0").utf8)
        var d: UInt64 = 0
        let rc = bytes.withUnsafeBufferPointer { b in
            bitsec_check_permission_packed(rt, UnsafeRawPointer(b.baseAddress)?.assumingMemoryBound(to: CChar.self), UInt(b.count), &d)
        }
        return (rc, d)
    }

    @Test func packedAgreesWithTheExplicitForm() {
        let (orc, rt) = open(#"{"permissions": {"policy": {"resources": ["docs"], "actions": ["read", "write"], "roles": {"w": {"allow": ["docs:read", {"permission": "docs:write", "owner_only": true}]}}}}}"#)
        #expect(orc == OK)
        defer { bitsec_runtime_close(rt) }
        var (rc, d) = packedCheck(rt, ["docs:read", "alice", "w", "", ""])
        #expect(rc == OK && d & 1 == 1)
        (rc, d) = packedCheck(rt, ["docs:write", "alice", "w", "", ""])
        #expect(rc == OK && (d >> 8) & 0xFF == 4)  // owner_only
        (rc, d) = packedCheck(rt, ["docs:write", "alice", "w", "", "", "alice", "", ""])
        #expect(rc == OK && d & 1 == 1)
        (rc, d) = packedCheck(rt, ["docs:write", "alice", "w", "", "", "docs:read", "alice", "", ""])
        #expect(rc == OK && (d >> 8) & 0xFF == 7)  // scope_missing
        (rc, d) = packedCheck(rt, ["docs:read", "alice", "w", "", "", "docs:read"])
        #expect(rc == OK && d & 1 == 1)
        // A NUL smuggled into a field changes the count: refused, never reinterpreted.
        #expect(packedCheck(rt, ["docs:read", "alice", "w", ""]).0 == E_INVALID)
        #expect(packedCheck(rt, ["docs:read", "a", "w", "", "", "x", "y"]).0 == E_INVALID)
        #expect(packedCheck(rt, Array(repeating: "x", count: 10)).0 == E_INVALID)
        var out: UInt64 = 0
        #expect(bitsec_check_permission_packed(rt, nil, 3, &out) == E_INVALID)
        #expect(bitsec_check_permission_packed(rt, "docs:read\0a\0w\0\0", 15, nil) == E_INVALID)
        #expect(bitsec_check_permission_packed(rt, "docs:read\0a\0w\0\0", UInt.max, &out) == E_TOO_LARGE)
        #expect(bitsec_check_permission_packed(rt, "docs:read\0a\0w\0\0", 0, &out) == E_INVALID)
    }
}

@Suite struct PermissionsClaimsABITests {
    private func claimsCheck(_ rt: OpaquePointer?, _ claims: String, _ perm: String, _ ctx: String? = nil) -> (Int32, UInt64) {
        var d: UInt64 = 0
        let c = Array((ctx ?? "").utf8)
        let rc = c.withUnsafeBufferPointer { cb in
            bitsec_check_permission_claims(rt, claims, UInt(claims.utf8.count), perm, UInt(perm.utf8.count),
                                           ctx == nil ? nil : UnsafeRawPointer(cb.baseAddress)?.assumingMemoryBound(to: CChar.self), UInt(c.count), &d)
        }
        return (rc, d)
    }

    @Test func adr007ClaimsDecide() {
        let (orc, rt) = open(#"{"permissions": {"policy": {"resources": ["inspections", "reports"], "actions": ["create", "read"], "scope_actions": {"write": ["create"]}, "roles": {"quality_engineer": {"allow": ["*:*"]}}}}}"#)
        #expect(orc == OK)
        defer { bitsec_runtime_close(rt) }
        let claims = #"{"sub": "user_12345", "scope": "inspections:read inspections:write", "tenant_id": "acme", "role": "quality_engineer", "permissions": ["x"], "exp": 1}"#
        var (rc, d) = claimsCheck(rt, claims, "inspections:create")
        #expect(rc == OK && d & 1 == 1)
        (rc, d) = claimsCheck(rt, claims, "reports:read")
        #expect(rc == OK && (d >> 8) & 0xFF == 7)  // scope_missing
        (rc, d) = claimsCheck(rt, claims, "inspections:read", "\0globex\0")
        #expect(rc == OK && (d >> 8) & 0xFF == 6)  // tenant_mismatch
        (rc, d) = claimsCheck(rt, #"{"user_id": 42, "roles": ["quality_engineer", "bad role"]}"#, "reports:read")
        #expect(rc == OK && d & 1 == 1)  // no scope claim: roles decide
        (rc, d) = claimsCheck(rt, #"{"sub": "a", "role": "quality_engineer", "scp": []}"#, "reports:read")
        #expect(rc == OK && (d >> 8) & 0xFF == 7)  // an empty scope list allows nothing
        #expect(claimsCheck(rt, "[1]", "reports:read").0 == 9)  // malformed
        #expect(claimsCheck(rt, "{", "reports:read").0 == 9)
        #expect(claimsCheck(rt, #"{"sub": "a\u0000b", "role": "x"}"#, "reports:read").0 == E_INVALID)
    }
}
