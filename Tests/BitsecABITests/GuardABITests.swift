// bitsec_guard_check through the exported C symbols only: the same decisions as the separate
// calls (bitsec_verify_token, bitsec_check_permission_claims, bitsec_rate_limit_take).
import Testing
import Glibc
import Bitsec

private let AT: Int64 = 1_900_000_000
private let guardConfig = #"""
{"allow_inline_secrets": true,
 "tokens": {"keys": [{"kid": "hs", "alg": "HS256", "secret": {"value": "0123456789abcdef0123456789abcdef"}}],
            "issuer": "iss", "audience": "aud"},
 "permissions": {"policy": {"resources": ["docs", "system"], "actions": ["read", "write"],
   "roles": {"reader": {"allow": ["*:read"]},
             "writer": {"inherits": ["reader"], "allow": [{"permission": "docs:write", "owner_only": true}],
                        "deny": ["system:*"]}}}},
 "rate_limits": {"categories": {"default": {"capacity": 80, "period_seconds": 60}}}}
"""#

private struct Outcome: Equatable {
    var decision: Int32, status: Int32, token: Int32, permission: Int32, rule: Int32, rate: [Int64]
}

private func sign(_ rt: OpaquePointer, _ claims: String) -> String {
    var buf = [CChar](repeating: 0, count: 4096)
    var n: UInt = 0
    let rc = claims.withCString { c in bitsec_token_sign(rt, c, UInt(strlen(c)), nil, 0, &buf, UInt(buf.count), &n) }
    #expect(rc == OK, "\(lastError())")
    return String(decoding: buf.prefix(Int(n)).map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

/// The three separate calls, in the guard's order: the token, the take (every request, a
/// refused one too), the permission; rate limited first, then a refused token, then a denial.
private func separate(_ rt: OpaquePointer, _ token: String, _ perm: String, _ ctx: [UInt8]) -> Outcome {
    var out = Outcome(decision: 0, status: 200, token: -1, permission: -1, rule: -1, rate: [0, 0, 0, 0, 0])
    var doc = [CChar](repeating: 0, count: 4096)
    var n: UInt = 0
    var reason: Int32 = -1
    #expect(bitsec_verify_token(rt, token, UInt(token.utf8.count), AT, &reason, &doc, UInt(doc.count), &n) == OK)
    out.token = reason
    var r = [Int64](repeating: 0, count: 7)
    #expect(bitsec_rate_limit_take(rt, "default", 7, "k", 1, 1, AT, &r) == OK)
    out.rate = [r[1], r[2], r[3], r[4], r[5]]
    if r[0] != 1 { out.decision = 4; out.status = 429; return out }
    guard reason == 0 else { out.decision = 1; out.status = 401; return out }
    var d: UInt64 = 0
    let rc = ctx.withUnsafeBufferPointer { c in
        bitsec_check_permission_claims(rt, doc, n, perm, UInt(perm.utf8.count),
                                       ctx.isEmpty ? nil : UnsafeRawPointer(c.baseAddress)?.assumingMemoryBound(to: CChar.self),
                                       UInt(ctx.count), &d)
    }
    #expect(rc == OK, "\(lastError())")
    out.permission = Int32((d >> 8) & 0xFF)
    out.rule = Int32(Int64(d >> 32) - 1)
    guard d & 1 == 1 else { out.decision = 3; out.status = 403; return out }
    return out
}

private func combined(_ rt: OpaquePointer, _ token: String, _ perm: String, _ ctx: [UInt8]) -> Outcome {
    var g = [Int64](repeating: 0, count: 8)
    var n: UInt = 0
    let rc = g.withUnsafeMutableBytes { res in
        ctx.withUnsafeBufferPointer { c in
            bitsec_guard_check(rt, token, UInt(token.utf8.count), nil, 0, perm, UInt(perm.utf8.count),
                               ctx.isEmpty ? nil : UnsafeRawPointer(c.baseAddress)?.assumingMemoryBound(to: CChar.self),
                               UInt(ctx.count), "default", 7, "k", 1, 1, AT, 0, res.baseAddress, nil, 0, &n)
        }
    }
    #expect(rc == OK, "\(lastError())")
    let i32 = g.withUnsafeBytes { Array($0.bindMemory(to: Int32.self).prefix(6)) }
    return Outcome(decision: i32[0], status: i32[1], token: i32[2], permission: i32[3], rule: i32[4],
                   rate: [g[3], g[4], g[5], g[6], g[7]])
}

/// One guard call made both ways: the nineteen arguments on `a`, the two structs
/// (bitsec_guard_route, bitsec_guard_request) on `b`. Returns (rc, result bytes, out_len,
/// document) of each.
private func bothWays(_ a: OpaquePointer, _ b: OpaquePointer, token: String?, scopes: String, perm: String, ctx: [UInt8],
                      category: String?, key: String, cost: Int64, flags: UInt32, cap: Int, reserved: UInt32 = 0)
    -> (args: (Int32, [UInt8], UInt, [CChar]), structs: (Int32, [UInt8], UInt, [CChar])) {
    func dup(_ s: String?) -> UnsafeMutablePointer<CChar>? { s.map { strdup($0)! } }
    let tok = dup(token), sc = dup(scopes), pm = dup(perm), cat = dup(category), k = dup(key)
    let cx = UnsafeMutablePointer<CChar>.allocate(capacity: max(ctx.count, 1))
    for (i, c) in ctx.enumerated() { cx[i] = CChar(bitPattern: c) }
    defer { free(tok); free(sc); free(pm); free(cat); free(k); cx.deallocate() }
    let tl = UInt(token?.utf8.count ?? 0), cl = UInt(category?.utf8.count ?? 0)
    let ctxp: UnsafeMutablePointer<CChar>? = ctx.isEmpty ? nil : cx
    // the arguments
    var g1 = [UInt8](repeating: 0xAA, count: 64)
    var doc1 = [CChar](repeating: 0, count: max(cap, 1))
    var n1: UInt = 99
    let rc1 = doc1.withUnsafeMutableBufferPointer { d in
        g1.withUnsafeMutableBytes { res in
            bitsec_guard_check(a, tok, tl, sc, UInt(scopes.utf8.count), pm, UInt(perm.utf8.count), ctxp, UInt(ctx.count),
                               cat, cl, k, UInt(key.utf8.count), cost, AT, flags, res.baseAddress,
                               cap == 0 ? nil : d.baseAddress, UInt(cap), &n1)
        }
    }
    // the structs
    var route = [UInt8](repeating: 0, count: Int(BitsecABI.BITSEC_GUARD_ROUTE_BYTES))
    var request = [UInt8](repeating: 0xAA, count: Int(BitsecABI.BITSEC_GUARD_REQUEST_BYTES))
    var doc2 = [CChar](repeating: 0, count: max(cap, 1))
    let rc2 = doc2.withUnsafeMutableBufferPointer { d in
        route.withUnsafeMutableBytes { r in
            r.storeBytes(of: UnsafePointer(sc), toByteOffset: 0, as: UnsafePointer<CChar>?.self)
            r.storeBytes(of: UInt(scopes.utf8.count), toByteOffset: 8, as: UInt.self)
            r.storeBytes(of: UnsafePointer(pm), toByteOffset: 16, as: UnsafePointer<CChar>?.self)
            r.storeBytes(of: UInt(perm.utf8.count), toByteOffset: 24, as: UInt.self)
            r.storeBytes(of: UnsafePointer(cat), toByteOffset: 32, as: UnsafePointer<CChar>?.self)
            r.storeBytes(of: cl, toByteOffset: 40, as: UInt.self)
            r.storeBytes(of: cost, toByteOffset: 48, as: Int64.self)
            r.storeBytes(of: flags, toByteOffset: 56, as: UInt32.self)
            r.storeBytes(of: reserved, toByteOffset: 60, as: UInt32.self)
            return request.withUnsafeMutableBytes { q in
                q.storeBytes(of: UnsafePointer(tok), toByteOffset: 0, as: UnsafePointer<CChar>?.self)
                q.storeBytes(of: tl, toByteOffset: 8, as: UInt.self)
                q.storeBytes(of: UnsafePointer(k), toByteOffset: 16, as: UnsafePointer<CChar>?.self)
                q.storeBytes(of: UInt(key.utf8.count), toByteOffset: 24, as: UInt.self)
                q.storeBytes(of: UnsafePointer(ctxp), toByteOffset: 32, as: UnsafePointer<CChar>?.self)
                q.storeBytes(of: UInt(ctx.count), toByteOffset: 40, as: UInt.self)
                q.storeBytes(of: AT, toByteOffset: 48, as: Int64.self)
                q.storeBytes(of: cap == 0 ? nil : d.baseAddress, toByteOffset: 56, as: UnsafeMutablePointer<CChar>?.self)
                q.storeBytes(of: UInt(cap), toByteOffset: 64, as: UInt.self)
                return bitsec_guard_check_request(b, r.baseAddress, q.baseAddress)
            }
        }
    }
    let n2 = request.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 72, as: UInt.self) }
    return ((rc1, g1, n1, Array(doc1.prefix(Int(min(n1, UInt(cap)))))),
            (rc2, Array(request[80...]), n2, Array(doc2.prefix(Int(min(n2, UInt(cap)))))))
}

@Suite struct GuardABITests {
    @Test func sameDecisionsAsTheSeparateCalls() throws {
        let (rc1, a) = open(guardConfig), (rc2, b) = open(guardConfig)
        #expect(rc1 == OK && rc2 == OK, "\(lastError())")
        let ra = try #require(a), rb = try #require(b)
        defer { bitsec_runtime_close(ra); bitsec_runtime_close(rb) }
        var tokens = ["not.a.token"]
        for (sub, roles, exp) in [("alice", "reader", 2_000_000_000), ("bob", "writer", 2_000_000_000),
                                  ("carol", "writer", 1_800_000_000), ("dave", "nobody", 2_000_000_000)] {
            tokens.append(sign(ra, #"{"sub":"\#(sub)","roles":["\#(roles)"],"iss":"iss","aud":"aud","exp":\#(exp)}"#))
        }
        let contexts: [[UInt8]] = [[], Array("bob\0\0".utf8), Array("alice\0\0".utf8)]
        var compared = 0
        for token in tokens {
            for perm in ["docs:read", "docs:write", "system:read", "nope:read", "docs:nope"] {
                for ctx in contexts {
                    #expect(combined(ra, token, perm, ctx) == separate(rb, token, perm, ctx), "\(token.prefix(20)) \(perm)")
                    compared += 1
                }
            }
        }
        #expect(compared == 75)
        // Every one of the 75 took from "k", refused or not (capacity 80): 5 left on both.
        #expect(combined(ra, tokens[1], "docs:read", []).rate[1] == 4)
        #expect(separate(rb, tokens[1], "docs:read", []).rate[1] == 4)
        // Once the bucket is empty, 429 comes before any other answer, on both.
        for _ in 0..<4 { _ = combined(ra, tokens[0], "docs:read", []); _ = separate(rb, tokens[0], "docs:read", []) }
        for token in [tokens[0], tokens[1], tokens[4]] {  // invalid, allowed, denied
            let c = combined(ra, token, "docs:read", [])
            #expect(c.decision == BitsecABI.BITSEC_GUARD_RATE_LIMITED && c.status == 429)
            #expect(c == separate(rb, token, "docs:read", []))
        }
    }

    /// A caller's refused requests count against its bucket: its own valid token refused by
    /// the permission, a scope it lacks, an invalid token (keyed by the caller's key). Before,
    /// a refused request took nothing, so refusals (each with its audit record) had no limit.
    @Test func refusedRequestsTakeFromTheBucket() throws {
        let config = guardConfig.replacing(#""capacity": 80"#, with: #""capacity": 3"#)
        let (rc, h) = open(config)
        #expect(rc == OK, "\(lastError())")
        let rt = try #require(h)
        defer { bitsec_runtime_close(rt) }
        let reader = sign(rt, #"{"sub":"mallory","roles":["reader"],"iss":"iss","aud":"aud","exp":2000000000}"#)
        func check(_ token: String, _ perm: String, scopes: String = "", key: String = "ip:1",
                   flags: UInt32 = UInt32(BitsecABI.BITSEC_GUARD_FLAG_KEY_BY_SUBJECT)) -> (Int32, Int32, Int64) {
            var g = [Int64](repeating: 0, count: 8)
            var n: UInt = 0
            let rc = g.withUnsafeMutableBytes { res in
                bitsec_guard_check(rt, token, UInt(token.utf8.count), scopes, UInt(scopes.utf8.count), perm,
                                   UInt(perm.utf8.count), nil, 0, "default", 7, key, UInt(key.utf8.count), 1, AT,
                                   flags, res.baseAddress, nil, 0, &n)
            }
            #expect(rc == OK, "\(lastError())")
            let i32 = g.withUnsafeBytes { Array($0.bindMemory(to: Int32.self).prefix(2)) }
            return (i32[0], i32[1], g[4])
        }
        // mallory's own token, refused: each refusal takes from user:mallory
        #expect(check(reader, "docs:write") == (BitsecABI.BITSEC_GUARD_PERMISSION_DENIED, 403, 2))
        #expect(check(reader, "docs:read", scopes: "admin") == (BitsecABI.BITSEC_GUARD_SCOPE_MISSING, 403, 1))
        #expect(check(reader, "docs:write") == (BitsecABI.BITSEC_GUARD_PERMISSION_DENIED, 403, 0))
        // the bucket is empty: refused for the rate limit, whatever the permission says
        #expect(check(reader, "docs:write").1 == 429)
        #expect(check(reader, "docs:read").1 == 429)
        // invalid tokens take from the caller's key (here the address), then meet 429
        for left in [2, 1, 0] as [Int64] {
            #expect(check("not.a.token", "docs:read") == (BitsecABI.BITSEC_GUARD_TOKEN_REFUSED, 401, left))
        }
        #expect(check("not.a.token", "docs:read").1 == 429)
        // another address is not affected
        #expect(check("not.a.token", "docs:read", key: "ip:2") == (BitsecABI.BITSEC_GUARD_TOKEN_REFUSED, 401, 2))
    }

    /// With BITSEC_GUARD_FLAG_KEY_BY_SUBJECT a token that names a tenant takes from
    /// "tenant:<n>:<tenant>:user:<sub>": namesakes in two tenants have two buckets (before, both
    /// took from "user:<sub>", and one tenant's user could hold the other's at 429). The
    /// tenant's length keeps a tenant that looks like the rest of a key from meeting another.
    @Test func namesakesInTwoTenantsHaveTwoBuckets() throws {
        let config = guardConfig.replacing(#""capacity": 80"#, with: #""capacity": 1"#)
        let (rc, h) = open(config)
        #expect(rc == OK, "\(lastError())")
        let rt = try #require(h)
        defer { bitsec_runtime_close(rt) }
        func token(_ sub: String, _ tenant: String?) -> String {
            let t = tenant.map { #","tenant_id":"\#($0)""# } ?? ""
            return sign(rt, #"{"sub":"\#(sub)","roles":["reader"],"iss":"iss","aud":"aud","exp":2000000000\#(t)}"#)
        }
        func status(_ token: String) -> Int32 {
            var g = [Int64](repeating: 0, count: 8)
            var n: UInt = 0
            let rc = g.withUnsafeMutableBytes { res in
                bitsec_guard_check(rt, token, UInt(token.utf8.count), nil, 0, nil, 0, nil, 0, "default", 7, "ip:1", 4, 1, AT,
                                   UInt32(BitsecABI.BITSEC_GUARD_FLAG_KEY_BY_SUBJECT), res.baseAddress, nil, 0, &n)
            }
            #expect(rc == OK, "\(lastError())")
            return g.withUnsafeBytes { $0.load(fromByteOffset: 4, as: Int32.self) }
        }
        let users = [token("alice", "t1"), token("alice", "t2"), token("alice", nil), token("b:user:c", "a"),
                     token("c", "a:user:b")]
        #expect(users.map(status) == [200, 200, 200, 200, 200])
        #expect(users.map(status) == [429, 429, 429, 429, 429])
        for key in ["tenant:2:t1:user:alice", "tenant:2:t2:user:alice", "user:alice", "tenant:1:a:user:b:user:c",
                    "tenant:8:a:user:b:user:c"] {
            var d = [Int64](repeating: -1, count: Int(BitsecABI.BITSEC_RATE_LIMIT_DECISION_LEN))
            #expect(bitsec_rate_limit_take(rt, "default", 7, key, UInt(key.utf8.count), 1, AT, &d) == OK)
            #expect(d[Int(BitsecABI.BITSEC_RATE_LIMIT_D_ALLOWED)] == 0, "\(key): spent by its token")
        }
    }

    /// bitsec_guard_check_request decides as bitsec_guard_check with the same values: the
    /// same status, result, document and bucket, case by case on two runtimes.
    @Test func requestStructsDecideAsTheArguments() throws {
        let (rc1, h1) = open(guardConfig), (rc2, h2) = open(guardConfig)
        #expect(rc1 == OK && rc2 == OK, "\(lastError())")
        let a = try #require(h1), b = try #require(h2)
        defer { bitsec_runtime_close(a); bitsec_runtime_close(b) }
        let reader = sign(a, #"{"sub":"alice","roles":["reader"],"iss":"iss","aud":"aud","exp":2000000000,"scope":"read"}"#)
        let writer = sign(a, #"{"sub":"bob","roles":["writer"],"iss":"iss","aud":"aud","exp":2000000000}"#)
        let keyed = UInt32(BitsecABI.BITSEC_GUARD_FLAG_KEY_BY_SUBJECT), advisory = UInt32(BitsecABI.BITSEC_GUARD_FLAG_TOKEN_ADVISORY)
        var compared = 0
        for token in [nil, "not.a.token", reader, writer] as [String?] {
            for (perm, scopes) in [("", ""), ("docs:read", ""), ("docs:write", ""), ("docs:read", "read"), ("docs:read", "admin")] {
                for ctx in [[], Array("bob\0\0".utf8)] as [[UInt8]] {
                    for (category, flags) in [(nil, UInt32(0)), ("default", keyed), ("default", advisory), ("nope", UInt32(0)), ("default", UInt32(8))] as [(String?, UInt32)] {
                        for cap in [0, 8, 4096] {
                            let r = bothWays(a, b, token: token, scopes: scopes, perm: perm, ctx: ctx, category: category,
                                             key: "ip:9", cost: 1, flags: flags, cap: cap)
                            #expect(r.args.0 == r.structs.0 && r.args.1 == r.structs.1 && r.args.2 == r.structs.2
                                    && r.args.3 == r.structs.3, "\(String(describing: token?.prefix(12))) \(perm) \(scopes) \(flags) \(cap)")
                            compared += 1
                        }
                    }
                }
            }
        }
        #expect(compared == 600)
        // the bucket of "ip:9" and of the subjects: taken as often on both
        let last = bothWays(a, b, token: nil, scopes: "", perm: "", ctx: [], category: "default", key: "ip:9", cost: 1,
                            flags: 0, cap: 0)
        #expect(last.args.0 == OK && last.args.1 == last.structs.1)
        // the struct's own refusals: a reserved field that is not 0, NULL structs
        let bad = bothWays(a, b, token: reader, scopes: "", perm: "docs:read", ctx: [], category: "default", key: "ip:9",
                           cost: 1, flags: 0, cap: 0, reserved: 1)
        #expect(bad.structs.0 == E_INVALID && lastError().contains("reserved"))
        var request = [UInt8](repeating: 0, count: 144)
        #expect(bitsec_guard_check_request(a, nil, &request) == E_INVALID)
        var route = [UInt8](repeating: 0, count: 64)
        #expect(bitsec_guard_check_request(a, &route, nil) == E_INVALID)
        #expect(bitsec_guard_check_request(nil, &route, &request) == E_INVALID)
    }

    @Test func abiCallsAreCounted() throws {
        let (rc, h) = open(guardConfig)
        #expect(rc == OK)
        let rt = try #require(h)
        defer { bitsec_runtime_close(rt) }
        func count() -> Int {
            var buf = [CChar](repeating: 0, count: 1 << 16)
            var n: UInt = 0
            #expect(bitsec_metrics_text(rt, &buf, UInt(buf.count), &n) == OK)
            let text = String(decoding: buf.prefix(Int(n)).map { UInt8(bitPattern: $0) }, as: UTF8.self)
            let line = text.split(separator: "\n").first { $0.hasPrefix("bitsec_abi_calls_total{") } ?? ""
            return Int(line.split(separator: " ").last ?? "") ?? -1
        }
        let before = count()
        let token = sign(rt, #"{"sub":"x","roles":["reader"],"iss":"iss","aud":"aud","exp":2000000000}"#)
        _ = combined(rt, token, "docs:read", [])
        _ = bitsec_redis_ping(nil, nil)  // no runtime: not counted
        #expect(count() - before == 3)  // sign, guard check, and the metrics call itself
    }
}
