import Testing
import Glibc
import Dispatch
import Synchronization
import BitsecCore

private let AT: Int64 = 1_900_000_000
private let addr = "203.0.113.7"
private let ua: [UInt8] = Array("Mozilla/5.0 (X11; Linux x86_64)".utf8)
private let tokensSection = #""tokens": {"keys": [{"kid": "hs", "alg": "HS256", "secret": {"value": "0123456789abcdef0123456789abcdef"}}]}"#

/// A runtime in `kind` with a sessions section (and tokens when asked).
private func runtime(_ kind: TestStore, _ sessions: String = "{}", tokens: Bool = false) throws -> Runtime? {
    try TestStores.runtime(kind, #""allow_inline_secrets": true, "sessions": \#(sessions)"# + (tokens ? ", " + tokensSection : ""))
}

/// The sessions section of `rt` again, with an audit hook of the test's own.
private func withAudit(_ rt: Runtime, _ sessions: String, _ hook: any AuditHook) throws -> SessionService {
    let doc = try JSONReader.parse(Array(sessions.utf8))
    return try SessionService.read(try ConfigObject(doc, path: "sessions"), context: TestStores.context(rt, audit: hook))
}

private func validate(_ s: SessionService, _ token: String, client: String = addr, userAgent: [UInt8] = ua, at: Int64) throws -> SessionService.Validation {
    try Array(token.utf8).withUnsafeBytes { raw in try s.validate(token: raw, client: client, userAgent: userAgent, at: at) }
}

private func rotate(_ s: SessionService, _ token: String, at: Int64) throws -> (SessionService.Validation, SessionService.Created?) {
    try Array(token.utf8).withUnsafeBytes { raw in try s.rotate(token: raw, client: addr, userAgent: ua, at: at) }
}

private func user(_ tag: String) -> String { TestStores.uniqueName(tag) }

@Suite struct SessionTests {
    @Test(arguments: TestStores.kinds) func createValidateTouchAndIdleTimeout(kind: TestStore) throws {
        guard let rt = try runtime(kind, #"{"idle_timeout_seconds": 1800}"#) else { return }
        let s = try rt.require(rt.sessions)
        let u = user("life")
        let c = try s.create(user: u, tenant: "t1", client: addr, userAgent: ua, at: AT)
        #expect(c.token.utf8.count == SessionToken.tokenLength)
        #expect(c.id.utf8.count == SessionToken.idLength)
        #expect(c.expires == AT + 86_400)
        let v = try validate(s, c.token, at: AT + 1000)
        #expect(v.reason == .valid)
        #expect(v.id == c.id)
        #expect(v.record.map { String(decoding: $0.user, as: UTF8.self) } == u)
        #expect(v.record.map { String(decoding: $0.tenant, as: UTF8.self) } == "t1")
        #expect(v.record?.lastSeen == AT + 1000)
        // The touch at +1000 moved the idle deadline to +2800.
        #expect(try validate(s, c.token, at: AT + 2799).reason == .valid)
        #expect(try validate(s, c.token, at: AT + 2799 + 1800).reason == .idleTimeout)
        #expect(try validate(s, c.token, at: AT + 2799 + 1801).reason == .unknown)
        #expect(try s.list(user: u, tenant: "t1", at: AT + 5000).isEmpty)
    }

    @Test(arguments: TestStores.kinds) func absoluteTimeout(kind: TestStore) throws {
        guard let rt = try runtime(kind, #"{"idle_timeout_seconds": 0, "absolute_timeout_seconds": 3600}"#) else { return }
        let s = try rt.require(rt.sessions)
        let c = try s.create(user: user("abs"), tenant: "", client: addr, userAgent: ua, at: AT)
        #expect(try validate(s, c.token, at: AT + 3599).reason == .valid)
        #expect(try validate(s, c.token, at: AT + 3600).reason == .expired)
        #expect(try validate(s, c.token, at: AT + 3601).reason == .unknown)
    }

    @Test(arguments: TestStores.kinds) func addressBindingDetectsHijack(kind: TestStore) throws {
        guard let rt = try runtime(kind) else { return }
        let hook = RecordingAuditHook()
        let s = try withAudit(rt, "{}", hook)
        let u = user("hijack")
        let c = try s.create(user: u, tenant: "", client: addr, userAgent: ua, at: AT)
        // The same /24 (a NAT pool, a DHCP renewal) and another user agent: still the client.
        #expect(try validate(s, c.token, client: "203.0.113.200", userAgent: Array("other".utf8), at: AT + 1).reason == .valid)
        // Another network: a stolen cookie. The session ends for everyone.
        #expect(try validate(s, c.token, client: "198.51.100.1", at: AT + 2).reason == .bindingMismatch)
        #expect(hook.events == ["session/binding_mismatch/\(u)"])
        #expect(try validate(s, c.token, at: AT + 3).reason == .unknown)
        #expect(try s.list(user: u, tenant: "", at: AT + 3).isEmpty)
        // IPv6: the /64.
        let c6 = try s.create(user: u, tenant: "", client: "2001:db8:1:2::1", userAgent: [], at: AT)
        #expect(try validate(s, c6.token, client: "2001:db8:1:2:ffff::9", at: AT + 1).reason == .valid)
        #expect(try validate(s, c6.token, client: "2001:db8:1:3::1", at: AT + 2).reason == .bindingMismatch)
        // A missing address never matches.
        let c2 = try s.create(user: u, tenant: "", client: addr, userAgent: [], at: AT)
        #expect(try validate(s, c2.token, client: "", at: AT + 1).reason == .bindingMismatch)
    }

    @Test(arguments: TestStores.kinds) func userAgentAndNoBinding(kind: TestStore) throws {
        guard let rt = try runtime(kind, #"{"binding": "user_agent"}"#) else { return }
        let s = try rt.require(rt.sessions)
        let c = try s.create(user: user("ua"), tenant: "", client: "", userAgent: ua, at: AT)
        #expect(try validate(s, c.token, client: "198.51.100.1", at: AT + 1).reason == .valid)
        #expect(try validate(s, c.token, userAgent: Array("curl/8".utf8), at: AT + 2).reason == .bindingMismatch)
        guard let rt2 = try runtime(kind, #"{"binding": "none"}"#) else { return }
        let s2 = try rt2.require(rt2.sessions)
        let c2 = try s2.create(user: user("none"), tenant: "", client: "", userAgent: [], at: AT)
        #expect(try validate(s2, c2.token, client: "198.51.100.1", userAgent: Array("x".utf8), at: AT + 1).reason == .valid)
    }

    @Test(arguments: TestStores.kinds) func rotationEndsTheOldIdentifier(kind: TestStore) throws {
        guard let rt = try runtime(kind) else { return }
        let s = try rt.require(rt.sessions)
        let u = user("rotate")
        let c = try s.create(user: u, tenant: "t", client: addr, userAgent: ua, at: AT)
        let (v, n) = try rotate(s, c.token, at: AT + 10)
        #expect(v.reason == .valid)
        let new = try #require(n)
        #expect(new.token != c.token && new.id != c.id)
        #expect(new.expires == c.expires)  // rotation never extends the absolute timeout
        // The fixated (old) token is worthless; the new one works.
        #expect(try validate(s, c.token, at: AT + 11).reason == .unknown)
        let nv = try validate(s, new.token, at: AT + 11)
        #expect(nv.reason == .valid)
        #expect(nv.record?.created == AT)
        #expect(try s.list(user: u, tenant: "t", at: AT + 11).map(\.id) == [new.id])
        // Rotating the old token again gives nothing.
        let (v2, n2) = try rotate(s, c.token, at: AT + 12)
        #expect(v2.reason == .unknown && n2 == nil)
    }

    @Test(arguments: TestStores.kinds) func listRevokeAndPerUserBound(kind: TestStore) throws {
        guard let rt = try runtime(kind, #"{"max_sessions_per_user": 3}"#) else { return }
        let s = try rt.require(rt.sessions)
        let u = user("list"), other = user("other")
        var created: [SessionService.Created] = []
        for i in 0..<5 { created.append(try s.create(user: u, tenant: "t", client: addr, userAgent: ua, at: AT + Int64(i))) }
        let o = try s.create(user: other, tenant: "t", client: addr, userAgent: ua, at: AT)
        let sameNameOtherTenant = try s.create(user: u, tenant: "t2", client: addr, userAgent: ua, at: AT)
        // Beyond the bound the oldest sessions ended.
        let listed = try s.list(user: u, tenant: "t", at: AT + 10)
        #expect(listed.map(\.id) == created[2...].map(\.id))
        #expect(listed.map(\.record.created) == [AT + 2, AT + 3, AT + 4])
        #expect(try validate(s, created[0].token, at: AT + 10).reason == .unknown)
        #expect(try validate(s, created[1].token, at: AT + 10).reason == .unknown)
        // Revoke one by its identifier, one by its token.
        #expect(try s.revoke(id: created[2].id, at: AT + 11))
        #expect(try !s.revoke(id: created[2].id, at: AT + 11))
        #expect(try s.revoke(id: created[3].token, at: AT + 11))
        #expect(try validate(s, created[2].token, at: AT + 12).reason == .unknown)
        #expect(try validate(s, created[3].token, at: AT + 12).reason == .unknown)
        #expect(try s.list(user: u, tenant: "t", at: AT + 12).map(\.id) == [created[4].id])
        // Revoke all of the user's: other users and the same name in another tenant stay.
        #expect(try s.revokeUser(user: u, tenant: "t", at: AT + 13) == 1)
        #expect(try validate(s, created[4].token, at: AT + 14).reason == .unknown)
        #expect(try s.list(user: u, tenant: "t", at: AT + 14).isEmpty)
        #expect(try validate(s, o.token, at: AT + 14).reason == .valid)
        #expect(try validate(s, sameNameOtherTenant.token, at: AT + 14).reason == .valid)
        #expect(try s.revokeUser(user: u, tenant: "t", at: AT + 15) == 0)
    }

    @Test(arguments: TestStores.kinds) func malformedTokensAreUnknown(kind: TestStore) throws {
        guard let rt = try runtime(kind) else { return }
        let s = try rt.require(rt.sessions)
        let c = try s.create(user: user("mal"), tenant: "", client: addr, userAgent: ua, at: AT)
        for t in ["", "x", c.id, String(c.token.dropLast()), c.token + "A", String(repeating: "A", count: 56),
                  "{" + String(c.token.dropFirst()), String(c.token.prefix(43)) + "." + "AAAAAAAAAAAA"] {
            #expect(try validate(s, t, at: AT + 1).reason == .unknown, "\(t)")
        }
        #expect(try validate(s, c.token, at: AT + 1).reason == .valid)
        #expect(throws: BitsecError.self) { try s.create(user: "", tenant: "", client: addr, userAgent: ua, at: AT) }
        #expect(throws: BitsecError.self) { try s.create(user: String(repeating: "u", count: 129), tenant: "", client: addr, userAgent: ua, at: AT) }
        #expect(throws: BitsecError.self) { try s.create(user: "u", tenant: String(repeating: "t", count: 65), client: addr, userAgent: ua, at: AT) }
        #expect(throws: BitsecError.self) { try s.create(user: "u", tenant: "", client: "", userAgent: ua, at: AT) }
    }

    /// Ending a session revokes the tokens issued for it (session_id and sub).
    @Test(arguments: TestStores.kinds) func endingASessionRevokesItsTokens(kind: TestStore) throws {
        guard let rt = try runtime(kind, tokens: true) else { return }
        let s = try rt.require(rt.sessions), t = try rt.require(rt.tokens)
        let u = user("tok")
        let c = try s.create(user: u, tenant: "", client: addr, userAgent: ua, at: AT)
        let pair = try issue(t, sub: u, sid: c.id, at: AT)
        #expect(try t.verify(pair.access, at: AT + 1).reason == .valid)
        #expect(try s.revoke(id: c.id, at: AT + 2))
        #expect(try t.verify(pair.access, at: AT + 3).reason == .revoked)
        #expect(try refresh(t, pair.refresh, at: AT + 3).reason == .revoked)
        // revoke_user does the same for each session.
        let c2 = try s.create(user: u, tenant: "", client: addr, userAgent: ua, at: AT + 10)
        let pair2 = try issue(t, sub: u, sid: c2.id, at: AT + 10)
        #expect(try s.revokeUser(user: u, tenant: "", at: AT + 11) == 1)
        #expect(try t.verify(pair2.access, at: AT + 12).reason == .revoked)
    }

    /// RFC 9700 4.14.2: a refresh token presented after its exchange revokes its whole family.
    @Test(arguments: TestStores.kinds) func delayedRefreshReplayRevokesTheFamily(kind: TestStore) throws {
        guard let rt = try runtime(kind, tokens: true) else { return }
        let s = try rt.require(rt.sessions), t = try rt.require(rt.tokens)
        let u = user("replay")
        let c = try s.create(user: u, tenant: "", client: addr, userAgent: ua, at: AT)
        let first = try issue(t, sub: u, sid: c.id, at: AT)
        // The legitimate exchange.
        let r = try refresh(t, first.refresh, at: AT + 10)
        #expect(r.reason == .valid)
        let second = try pairOf(try #require(r.pair))
        #expect(try t.verify(second.access, at: AT + 20).reason == .valid)
        // Much later the old refresh token comes back: stolen. Everything of the session goes.
        #expect(try refresh(t, first.refresh, at: AT + 600).reason == .revoked)
        #expect(try t.verify(second.access, at: AT + 601).reason == .revoked)
        #expect(try refresh(t, second.refresh, at: AT + 602).reason == .revoked)
        #expect(try validate(s, c.token, at: AT + 603).reason == .unknown)
        // Another session of the same user is untouched.
        let other = try s.create(user: u, tenant: "", client: addr, userAgent: ua, at: AT)
        #expect(try validate(s, other.token, at: AT + 604).reason == .valid)
    }

    @Test(arguments: TestStores.kinds) func concurrentRefreshReplaysRevokeTheFamily(kind: TestStore) throws {
        guard let rt = try runtime(kind, tokens: true) else { return }
        let s = try rt.require(rt.sessions), t = try rt.require(rt.tokens)
        let u = user("race")
        let c = try s.create(user: u, tenant: "", client: addr, userAgent: ua, at: AT)
        let first = try issue(t, sub: u, sid: c.id, at: AT)
        let winners = Locked<[String]>([])  // pthread-based: ThreadSanitizer follows it (docs/sanitizers.md)
        let refused = Atomic<Int>(0)
        DispatchQueue.concurrentPerform(iterations: 16) { _ in
            guard let r = try? refresh(t, first.refresh, at: AT + 5) else { return }
            if r.reason == .valid, let p = r.pair { winners.with { $0.append(String(decoding: p, as: UTF8.self)) } }
            if r.reason == .revoked { refused.add(1, ordering: .relaxed) }
        }
        let won = winners.with { $0 }
        #expect(won.count == 1)
        #expect(refused.load(ordering: .relaxed) == 15)
        // The replays came after (or with) the winning exchange: the winner's pair is revoked too.
        let p = try pairOf(Array(try #require(won.first).utf8))
        #expect(try t.verify(p.access, at: AT + 6).reason == .revoked)
        #expect(try refresh(t, p.refresh, at: AT + 6).reason == .revoked)
        #expect(try validate(s, c.token, at: AT + 6).reason == .unknown)
    }

    @Test(arguments: TestStores.kinds) func refreshReplayEmitsAnAuditEvent(kind: TestStore) throws {
        guard let rt = try runtime(kind, tokens: true) else { return }
        let hook = RecordingAuditHook()
        let doc = try JSONReader.parse(Array(#"{"keys": [{"kid": "hs", "alg": "HS256", "secret": {"value": "0123456789abcdef0123456789abcdef"}}]}"#.utf8))
        let t = try TokenService.read(try ConfigObject(doc, path: "tokens"), context: TestStores.context(rt, audit: hook))
        let u = user("event")
        let first = try issue(t, sub: u, sid: "sid-\(u)", at: AT)
        #expect(try refresh(t, first.refresh, at: AT + 1).reason == .valid)
        #expect(hook.events.isEmpty)
        #expect(try refresh(t, first.refresh, at: AT + 2).reason == .revoked)
        #expect(hook.events.contains("security_incident/refresh_token_reused/\(u)"))
    }

    /// The in-memory tables hold at most max_keys sessions however many are created.
    @Test(arguments: TestStores.boundedKinds) func floodStaysBounded(kind: TestStore) throws {
        guard let rt = try runtime(kind, #"{"max_keys": 64}"#) else { return }
        let s = try rt.require(rt.sessions)
        let store = try #require(s.store as? MemorySessionStore)
        var last: SessionService.Created? = nil
        for i in 0..<2000 {
            last = try s.create(user: "flood-\(i)", tenant: "", client: addr, userAgent: ua, at: AT + Int64(i))
        }
        #expect(store.count <= 64)
        #expect(store.tableStats.allSatisfy { $0.entryCount <= 64 })
        #expect(store.tableStats[0].evictionCount > 0)
        // The newest session works; the oldest was evicted (its user logs in again).
        #expect(try validate(s, try #require(last).token, at: AT + 2000).reason == .valid)
        #expect(try s.list(user: "flood-0", tenant: "", at: AT + 2000).isEmpty)
    }
}

// MARK: - Tokens

private struct Pair { let access: String; let refresh: String }

private func pairOf(_ bytes: [UInt8]) throws -> Pair {
    guard case .object(let o) = try JSONReader.parse(bytes), case .string(let a)? = o["access_token"],
          case .string(let r)? = o["refresh_token"] else { throw BitsecError(.malformed, "no pair") }
    return Pair(access: a, refresh: r)
}

private func issue(_ t: TokenService, sub: String, sid: String, at: Int64) throws -> Pair {
    let claims = Array(#"{"sub": "\#(sub)", "session_id": "\#(sid)"}"#.utf8)
    return try pairOf(try claims.withUnsafeBytes { raw in try t.issuePair(claims: raw, kid: nil, at: at) })
}

private func refresh(_ t: TokenService, _ token: String, at: Int64) throws -> TokenService.Refresh {
    try Array(token.utf8).withUnsafeBytes { raw in try t.refresh(raw, at: at) }
}
