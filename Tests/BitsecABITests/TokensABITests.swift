// The tokens functions, through the exported C symbols only.
import Testing
import Glibc
import Bitsec

private let TOKEN_VALID = BitsecABI.BITSEC_TOKEN_VALID, TOKEN_MALFORMED = BitsecABI.BITSEC_TOKEN_MALFORMED, TOKEN_TOO_LARGE = BitsecABI.BITSEC_TOKEN_TOO_LARGE, TOKEN_EXPIRED = BitsecABI.BITSEC_TOKEN_EXPIRED
private let TOKEN_REVOKED = BitsecABI.BITSEC_TOKEN_REVOKED, TOKEN_WRONG_TYPE = BitsecABI.BITSEC_TOKEN_WRONG_TYPE

private let config = #"{"allow_inline_secrets": true, "tokens": {"keys": [{"kid": "hs", "alg": "HS256", "secret": {"value": "0123456789abcdef0123456789abcdef"}}], "issuer": "iss", "audience": "aud"}}"#

private func withTokens(_ body: (OpaquePointer) throws -> Void) throws {
    let (rc, rt) = open(config)
    #expect(rc == OK, "\(lastError())")
    let h = try #require(rt)
    defer { bitsec_runtime_close(h) }
    try body(h)
}

private func signToken(_ rt: OpaquePointer, _ claims: String) -> String {
    var buf = [CChar](repeating: 0, count: 4096)
    var n: UInt = 0
    let rc = claims.withCString { c in bitsec_token_sign(rt, c, UInt(strlen(c)), nil, 0, &buf, UInt(buf.count), &n) }
    #expect(rc == OK, "\(lastError())")
    return String(decoding: buf.prefix(Int(n)).map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

private func verify(_ rt: OpaquePointer, _ token: String, at: Int64 = 1_900_000_000) -> (Int32, Int32, String) {
    var buf = [CChar](repeating: 0, count: 4096)
    var n: UInt = 0
    var reason: Int32 = -1
    let rc = token.withCString { t in bitsec_verify_token(rt, t, UInt(strlen(t)), at, &reason, &buf, UInt(buf.count), &n) }
    return (rc, reason, String(decoding: buf.prefix(Int(n)).map { UInt8(bitPattern: $0) }, as: UTF8.self))
}

@Suite struct TokensABITests {
    @Test func signVerifyAndDecisionOnly() throws {
        try withTokens { rt in
            let token = signToken(rt, #"{"sub":"u","iss":"iss","aud":"aud","exp":2000000000,"jti":"a1"}"#)
            let (rc, reason, doc) = verify(rt, token)
            #expect(rc == OK && reason == TOKEN_VALID)
            #expect(doc.hasPrefix(#"{"sub":"u","roles":[],"scope":null,"tenant_id":null,"department":null,"jti":"a1","exp":2000000000,"claims":{"#))
            // Decision only: NULL buffer, capacity 0.
            var reason2: Int32 = -1
            var n: UInt = 0
            #expect(token.withCString { bitsec_verify_token(rt, $0, UInt(strlen($0)), 1_900_000_000, &reason2, nil, 0, &n) } == OK)
            #expect(reason2 == TOKEN_VALID && n == UInt(doc.utf8.count))
            // Too small a buffer: the size needed.
            var small = [CChar](repeating: 0, count: 8)
            #expect(token.withCString { bitsec_verify_token(rt, $0, UInt(strlen($0)), 1_900_000_000, &reason2, &small, 8, &n) } == E_BUFFER)
            #expect(n == UInt(doc.utf8.count))
            #expect(verify(rt, token, at: 2_100_000_000).1 == TOKEN_EXPIRED)
            var newly: Int32 = -1
            #expect(bitsec_token_revoke(rt, "a1", 2, 2_000_000_000, 1_900_000_000, &newly) == OK && newly == 1)
            var revoked: Int32 = -1
            #expect(bitsec_token_is_revoked(rt, "a1", 2, 1_900_000_000, &revoked) == OK && revoked == 1)
            #expect(verify(rt, token).1 == TOKEN_REVOKED)
        }
    }

    @Test func invalidInputsNeverCrash() throws {
        try withTokens { rt in
            var reason: Int32 = -1
            var n: UInt = 0
            #expect(bitsec_verify_token(rt, nil, 5, 0, &reason, nil, 0, &n) == E_INVALID)
            #expect(bitsec_verify_token(rt, "a.b.c", 5, 0, nil, nil, 0, &n) == E_INVALID)
            #expect(bitsec_verify_token(rt, "a.b.c", 5, 0, &reason, nil, 0, nil) == E_INVALID)
            #expect(bitsec_verify_token(rt, "a.b.c", UInt.max, 0, &reason, nil, 0, &n) == E_TOO_LARGE)
            #expect(bitsec_verify_token(nil, "a.b.c", 5, 0, &reason, nil, 0, &n) == E_INVALID)
            #expect(bitsec_verify_token(rt, "", 0, 0, &reason, nil, 0, &n) == OK && reason == TOKEN_MALFORMED)
            let big = String(repeating: "a", count: 9000)
            #expect(verify(rt, big).1 == TOKEN_TOO_LARGE)
            for junk in ["..", "a..b", ".a.b", "a.b.", "\u{0}.\u{0}.\u{0}", "é.é.é", "a.b.c.d"] {
                let (rc, r, _) = verify(rt, junk)
                #expect(rc == OK && r == TOKEN_MALFORMED, "\(junk)")
            }
            var buf = [CChar](repeating: 0, count: 64)
            #expect(bitsec_token_sign(rt, "[1]", 3, nil, 0, &buf, 64, &n) == E_INVALID)
            #expect(bitsec_token_sign(rt, "{", 1, nil, 0, &buf, 64, &n) == 9)
            #expect(bitsec_token_sign(rt, "{}", 2, "nope", 4, &buf, 64, &n) == 14)
            #expect(bitsec_token_revoke(rt, nil, 3, 0, 0, nil) == E_INVALID)
            #expect(bitsec_token_revoke(rt, "", 0, 0, 0, nil) == E_INVALID)
            #expect(bitsec_token_keys_reload(rt, "{\"keys\": 1}", 11) == E_CONFIG)
            #expect(bitsec_token_keys_reload(rt, nil, 0) == E_CONFIG)
            #expect(String(cString: bitsec_token_reason_name(TOKEN_WRONG_TYPE)) == "wrong_type")
            #expect(String(cString: bitsec_token_reason_name(-5)) == "unknown")
        }
    }

    @Test func pairAndRefreshThroughTheABI() throws {
        try withTokens { rt in
            var buf = [CChar](repeating: 0, count: 32768)
            var n: UInt = 0
            let claims = #"{"sub":"u","role":"viewer"}"#
            #expect(bitsec_token_issue_pair(rt, claims, UInt(claims.utf8.count), nil, 0, 1_900_000_000, &buf, UInt(buf.count), &n) == OK)
            let pair = String(decoding: buf.prefix(Int(n)).map { UInt8(bitPattern: $0) }, as: UTF8.self)
            let refresh = try #require(pair.split(separator: "\"").dropFirst(7).first.map(String.init))
            let access = try #require(pair.split(separator: "\"").dropFirst(3).first.map(String.init))
            #expect(verify(rt, access).1 == TOKEN_VALID)
            #expect(verify(rt, refresh).1 == TOKEN_WRONG_TYPE)
            var reason: Int32 = -1
            var small = [CChar](repeating: 0, count: 100)
            #expect(bitsec_token_refresh(rt, refresh, UInt(refresh.utf8.count), nil, 0, 1_900_000_100, &reason, &small, 100, &n) == E_BUFFER)
            #expect(n >= 3 * 8192)
            #expect(bitsec_token_refresh(rt, refresh, UInt(refresh.utf8.count), nil, 0, 1_900_000_100, &reason, &buf, UInt(buf.count), &n) == OK)
            #expect(reason == TOKEN_VALID && n > 0)
            #expect(bitsec_token_refresh(rt, refresh, UInt(refresh.utf8.count), nil, 0, 1_900_000_100, &reason, &buf, UInt(buf.count), &n) == OK)
            #expect(reason == TOKEN_REVOKED && n == 0)
        }
    }

    @Test func notConfiguredAndClosed() throws {
        let (rc, rt) = open("{}")
        #expect(rc == OK)
        var reason: Int32 = 0
        var n: UInt = 0
        #expect(bitsec_verify_token(rt, "a.b.c", 5, 0, &reason, nil, 0, &n) == E_NOT_CONFIGURED)
        bitsec_runtime_close(rt)
        #expect(bitsec_verify_token(rt, "a.b.c", 5, 0, &reason, nil, 0, &n) == E_CLOSED)
    }
}

/// What bitsec_verify_token writes is what bitsec_check_permission_claims reads, and the time
/// claims are compared to the nanosecond (bitsec_verify_token_at).
@Suite struct TokenSemanticsABITests {
    private static let config = #"""
    {"allow_inline_secrets": true,
     "tokens": {"keys": [{"kid": "hs", "alg": "HS256", "secret": {"value": "0123456789abcdef0123456789abcdef"}}], "leeway_seconds": 0},
     "permissions": {"policy": {"resources": ["docs"], "actions": ["read", "write"],
       "roles": {"reader": {"allow": ["docs:read"]}, "clerk": {"allow": [{"permission": "docs:write", "same_department": true}]}}}}}
    """#

    private func decide(_ rt: OpaquePointer, _ claims: String, _ permission: String, _ context: [CChar] = []) -> (Int32, Int32, Int32) {
        var d: UInt64 = 0xFFFF
        let rc = claims.withCString { c in
            context.withUnsafeBufferPointer { ctx in
                bitsec_check_permission_claims(rt, c, UInt(strlen(c)), permission, UInt(permission.utf8.count),
                                               ctx.baseAddress, UInt(ctx.count), &d)
            }
        }
        return (rc, Int32(d & 1), Int32((d >> 8) & 0xFF))
    }

    @Test func verifyOutputIsAcceptedAsClaims() throws {
        let (orc, opened) = open(Self.config)
        #expect(orc == OK, "\(lastError())")
        let rt = try #require(opened)
        defer { bitsec_runtime_close(rt) }
        for claims in [#"{"sub":"u1","role":"reader","exp":2000000000}"#,            // no scope: judged by the role
                       #"{"sub":"u1","roles":["reader"],"exp":2000000000,"scope":""}"#,  // an empty scope: nothing
                       #"{"sub":"u1","role":"reader","exp":2000000000,"scope":"docs:read"}"#,
                       #"{"sub":"u1","role":"reader","exp":2000000000,"scp":["docs:write"]}"#,
                       #"{"sub":"u1","role":"reader","exp":2000000000,"scope":"docs:write","scp":["docs:read"]}"#,  // scope wins
                       #"{"sub":"u1","role":"reader","exp":2000000000,"scopes":["docs:write"]}"#,
                       #"{"sub":"u1","role":"reader","exp":2000000000,"scopes":null,"scp":"docs:write"}"#,
                       #"{"sub":"u1","role":"reader","exp":2000000000,"tenant":"t2"}"#,                // tenant, not tenant_id
                       #"{"sub":"u1","role":"reader","exp":2000000000,"tenant_id":"t1","tenant":"t2"}"#,
                       #"{"sub":"u1","roles":["clerk","reader"],"exp":2000000000,"department":"sales"}"#,
                       #"{"sub":"u1","roles":["clerk"],"exp":2000000000,"department":"hr"}"#] {
            let (rc, reason, out) = verify(rt, signToken(rt, claims))
            #expect(rc == OK && reason == TOKEN_VALID, "\(claims)")
            let contexts: [[CChar]] = [[], Array("o\0t1\0sales".utf8CString.dropLast()), Array("o\0t2\0hr".utf8CString.dropLast())]
            for permission in ["docs:read", "docs:write"] {
                for ctx in contexts {
                    let viaOutput = decide(rt, out, permission, ctx)
                    #expect(viaOutput.0 == OK, "\(out): \(lastError())")
                    #expect(viaOutput == decide(rt, claims, permission, ctx), "\(claims) \(permission) \(ctx)")
                }
            }
        }
        let (_, _, plain) = verify(rt, signToken(rt, #"{"sub":"u1","role":"reader","exp":2000000000}"#))
        #expect(plain.contains(#""scope":null"#))
        #expect(decide(rt, plain, "docs:read").1 == 1)
        #expect(decide(rt, plain, "docs:write").1 == 0)
    }

    @Test func deeplyNestedClaimsStillReadAsClaims() throws {
        let (orc, opened) = open(Self.config)
        #expect(orc == OK, "\(lastError())")
        let rt = try #require(opened)
        defer { bitsec_runtime_close(rt) }
        // The claims nest 64 levels deep (the most a token may); the result document one more.
        let nested = String(repeating: "[", count: 63) + String(repeating: "]", count: 63)
        let (rc, reason, out) = verify(rt, signToken(rt, #"{"sub":"u1","role":"reader","exp":2000000000,"x":\#(nested)}"#))
        #expect(rc == OK && reason == TOKEN_VALID)
        #expect(decide(rt, out, "docs:read").0 == OK, "\(lastError())")
        #expect(decide(rt, out, "docs:read").1 == 1)
    }

    @Test func verifyAtSubSecondInstants() throws {
        let (orc, opened) = open(Self.config)
        #expect(orc == OK, "\(lastError())")
        let rt = try #require(opened)
        defer { bitsec_runtime_close(rt) }
        let token = signToken(rt, #"{"sub":"u1","exp":1900000001.5,"nbf":1900000000.5}"#)
        func at(_ s: Int64, _ ns: Int32) -> (Int32, Int32, UInt) {
            var reason: Int32 = -1
            var n: UInt = 0
            var buf = [CChar](repeating: 0, count: 1024)
            let rc = token.withCString { t in bitsec_verify_token_at(rt, t, UInt(strlen(t)), s, ns, &reason, &buf, 1024, &n) }
            return (rc, reason, n)
        }
        let TOKEN_NOT_YET_VALID = BitsecABI.BITSEC_TOKEN_NOT_YET_VALID
        // bitsec_verify_token at the whole second before nbf's fraction: not yet valid.
        #expect(verify(rt, token, at: 1_900_000_000).1 == TOKEN_NOT_YET_VALID)
        #expect(at(1_900_000_000, 0).1 == TOKEN_NOT_YET_VALID)
        #expect(at(1_900_000_000, 499_000_000).1 == TOKEN_NOT_YET_VALID)
        let ok = at(1_900_000_000, 501_000_000)
        #expect(ok.0 == OK && ok.1 == TOKEN_VALID && ok.2 > 0)
        #expect(at(1_900_000_001, 499_000_000).1 == TOKEN_VALID)
        #expect(at(1_900_000_001, 501_000_000).1 == TOKEN_EXPIRED)
        #expect(at(1_900_000_000, -1).0 == E_INVALID)
        #expect(at(1_900_000_000, 1_000_000_000).0 == E_INVALID)
        #expect(at(0, 5).0 == OK)  // now
    }
}

private func issuePair(_ rt: OpaquePointer, _ claims: String, at: Int64) -> (access: String, refresh: String, session: String) {
    var buf = [CChar](repeating: 0, count: 8192)
    var n: UInt = 0
    let rc = claims.withCString { c in bitsec_token_issue_pair(rt, c, UInt(strlen(c)), nil, 0, at, &buf, UInt(buf.count), &n) }
    #expect(rc == OK, "\(lastError())")
    let doc = String(decoding: buf.prefix(Int(n)).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    // {"access_token":"..","refresh_token":"..",...,"session_id":".."}: no escapes inside.
    let parts = doc.split(separator: "\"", omittingEmptySubsequences: false).map(String.init)
    func field(_ name: String) -> String {
        guard let i = parts.firstIndex(of: name), i + 2 < parts.count else { return "" }
        return parts[i + 2]
    }
    return (field("access_token"), field("refresh_token"), field("session_id"))
}

private func revokeToken(_ rt: OpaquePointer, _ token: String, at: Int64) -> (Int32, Int32, Int32) {
    var reason: Int32 = -1, newly: Int32 = -1
    let rc = token.withCString { bitsec_token_revoke_token(rt, $0, UInt(strlen($0)), at, &reason, &newly) }
    return (rc, reason, newly)
}

@Suite struct TokenRevocationABITests {
    static let small = #"{"allow_inline_secrets": true, "tokens": {"keys": [{"kid": "hs", "alg": "HS256", "secret": {"value": "0123456789abcdef0123456789abcdef"}}], "issuer": "iss", "audience": "aud", "revocation": {"max_entries": 64, "max_sessions": 64, "max_subjects": 64}}}"#

    @Test func sessionAndSubject() throws {
        let (orc, opened) = open(Self.small)
        #expect(orc == OK, "\(lastError())")
        let rt = try #require(opened)
        defer { bitsec_runtime_close(rt) }
        let at: Int64 = 1_900_000_000
        let a = issuePair(rt, #"{"sub":"u1"}"#, at: at)
        let b = issuePair(rt, #"{"sub":"u1"}"#, at: at)
        var newly: Int32 = -1
        #expect(bitsec_token_revoke_session(rt, a.session, UInt(a.session.utf8.count), "u1", 2, at + 5, &newly) == OK && newly == 1)
        #expect(verify(rt, a.access, at: at + 6).1 == TOKEN_REVOKED)
        #expect(verify(rt, b.access, at: at + 6).1 == TOKEN_VALID)
        #expect(bitsec_token_revoke_subject(rt, "u1", 2, 0, at + 7, &newly) == OK && newly == 1)
        #expect(verify(rt, b.access, at: at + 8).1 == TOKEN_REVOKED)
        #expect(verify(rt, issuePair(rt, #"{"sub":"u1"}"#, at: at + 8).access, at: at + 9).1 == TOKEN_VALID)
        // Empty or missing arguments are errors, not decisions.
        #expect(bitsec_token_revoke_session(rt, a.session, UInt(a.session.utf8.count), "", 0, at, nil) == E_INVALID)
        #expect(bitsec_token_revoke_subject(rt, nil, 2, 0, at, nil) == E_INVALID)
        // One tenant's subject: the same sub in another tenant keeps its tokens.
        let t1 = issuePair(rt, #"{"sub":"u2","tenant_id":"t1"}"#, at: at)
        let t2 = issuePair(rt, #"{"sub":"u2","tenant_id":"t2"}"#, at: at)
        #expect(bitsec_token_revoke_subject_in_tenant(rt, "u2", 2, "t2", 2, 0, at + 10, &newly) == OK && newly == 1)
        #expect(verify(rt, t1.access, at: at + 11).1 == TOKEN_VALID)
        #expect(verify(rt, t2.access, at: at + 11).1 == TOKEN_REVOKED)
        #expect(bitsec_token_revoke_subject_in_tenant(rt, "u2", 2, "", 0, 0, at, nil) == E_INVALID)
        // Revoking a refused token revokes nothing and says why.
        let (rc, reason, n) = revokeToken(rt, "x.y.z", at: at)
        #expect(rc == OK && reason == TOKEN_MALFORMED && n == 0)
    }

    @Test func aFloodPastMaxEntriesStillRevokes() throws {
        let (orc, opened) = open(Self.small)
        #expect(orc == OK, "\(lastError())")
        let rt = try #require(opened)
        defer { bitsec_runtime_close(rt) }
        let at: Int64 = 1_900_000_000
        var pairs: [(access: String, refresh: String, session: String)] = []
        for i in 0..<2000 { pairs.append(issuePair(rt, #"{"sub":"user\#(i % 40)"}"#, at: at)) }
        for p in pairs {
            let (rc, reason, newly) = revokeToken(rt, p.access, at: at + 1)
            // Once sessions are full the subject is revoked: later tokens of it are already revoked.
            #expect(rc == OK && (reason == TOKEN_VALID && newly == 1 || reason == TOKEN_REVOKED && newly == 0), "\(lastError())")
        }
        for p in pairs { #expect(verify(rt, p.access, at: at + 2).1 == TOKEN_REVOKED) }
        // Bare jtis far past the bound: never BITSEC_E_TOO_LARGE.
        for i in 0..<500 {
            let j = "bare-\(i)"
            #expect(bitsec_token_revoke(rt, j, UInt(j.utf8.count), at + 100, at + 1, nil) == OK, "\(lastError())")
        }
        #expect(verify(rt, signToken(rt, #"{"sub":"x","iss":"iss","aud":"aud","exp":2000000000,"iat":\#(at),"jti":"bare-499"}"#), at: at + 2).1 == TOKEN_REVOKED)
    }
}
