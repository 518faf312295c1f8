// The csrf capability: synchronizer tokens and signed double-submit cookies bound to a
// session, key rotation and reload, the Origin / Sec-Fetch-Site check.
import Testing
import Dispatch
import Synchronization
import BitsecCore

private let keyA = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
private let keyB = "1f1e1d1c1b1a191817161514131211100f0e0d0c0b0a09080706050403020100"
private let T0: Int64 = 1_900_000_000

private func csrf(_ extra: String = "", key: String = keyA, audit: (any AuditHook)? = nil) throws -> CSRFService {
    let json = #"{"key": {"value": "\#(key)", "encoding": "hex"}\#(extra)}"#
    let ctx = CapabilityContext(config: ConfigContext(allowInlineSecrets: true), redis: nil, audit: audit)
    return try CSRFService.read(try ConfigObject(try JSONReader.parse(json), path: "csrf"), context: ctx)
}

private func issue(_ c: CSRFService, _ kind: CSRFTokenKind, _ binding: String, at: Int64 = T0) throws -> String {
    let out = try Array(binding.utf8).withRawBytes { (b) throws(BitsecError) -> [UInt8] in try c.issue(kind: kind, binding: b, at: at) }
    return String(decoding: out, as: UTF8.self)
}

private func verify(_ c: CSRFService, _ kind: CSRFTokenKind, _ binding: String, _ token: String, at: Int64 = T0 + 1) throws -> CSRFReason {
    try Array(binding.utf8).withRawBytes { (b) throws(BitsecError) -> CSRFReason in
        try Array(token.utf8).withRawBytes { (t) throws(BitsecError) -> CSRFReason in try c.verify(kind: kind, binding: b, token: t, at: at) }
    }
}

private func doubleSubmit(_ c: CSRFService, _ binding: String, _ cookie: String, _ submitted: String, at: Int64 = T0 + 1) throws -> CSRFReason {
    try Array(binding.utf8).withRawBytes { (b) throws(BitsecError) -> CSRFReason in
        try Array(cookie.utf8).withRawBytes { (ck) throws(BitsecError) -> CSRFReason in
            try Array(submitted.utf8).withRawBytes { (s) throws(BitsecError) -> CSRFReason in
                try c.verifyDoubleSubmit(binding: b, cookie: ck, submitted: s, at: at)
            }
        }
    }
}

@Suite struct CSRFTests {
    @Test func synchronizerTokenIsBoundToItsSession() throws {
        let c = try csrf()
        let t = try issue(c, .synchronizer, "session-1")
        #expect(t.utf8.count == CSRFToken.tokenBytes)
        #expect(!t.contains("session-1"))
        #expect(try verify(c, .synchronizer, "session-1", t) == .valid)
        #expect(try verify(c, .synchronizer, "session-2", t) == .invalid)
        // Two tokens of one session differ (random nonce) and both verify.
        let t2 = try issue(c, .synchronizer, "session-1")
        #expect(t2 != t)
        #expect(try verify(c, .synchronizer, "session-1", t2) == .valid)
        // The other kind never verifies as this one.
        #expect(try verify(c, .doubleSubmit, "session-1", t) == .invalid)
        // Another key does not verify it.
        #expect(try verify(try csrf(key: keyB), .synchronizer, "session-1", t) == .invalid)
    }

    @Test func presentedTokensThatAreNotTokens() throws {
        let c = try csrf()
        let t = try issue(c, .synchronizer, "s")
        #expect(try verify(c, .synchronizer, "s", "") == .missing)
        #expect(try verify(c, .synchronizer, "s", "abc") == .malformed)
        #expect(try verify(c, .synchronizer, "s", String(t.dropLast())) == .malformed)
        #expect(try verify(c, .synchronizer, "s", t + "A") == .malformed)
        #expect(try verify(c, .synchronizer, "s", String(repeating: "A", count: 100_000)) == .malformed)
        #expect(try verify(c, .synchronizer, "s", String(repeating: "*", count: CSRFToken.tokenBytes)) == .malformed)
        // One flipped character of the MAC: invalid.
        var chars = Array(t)
        chars[chars.count - 2] = chars[chars.count - 2] == "A" ? "B" : "A"
        #expect(try verify(c, .synchronizer, "s", String(chars)) == .invalid)
        // One flipped character of the time or nonce: invalid (the MAC covers them).
        chars = Array(t)
        chars[5] = chars[5] == "A" ? "B" : "A"
        #expect(try verify(c, .synchronizer, "s", String(chars)) == .invalid)
        // An empty or oversized binding is an argument error, not a decision.
        expectError(.invalidArgument) { _ = try verify(c, .synchronizer, "", t) }
        expectError(.tooLarge) { _ = try verify(c, .synchronizer, String(repeating: "x", count: CSRFToken.maxBindingBytes + 1), t) }
    }

    @Test func tokensExpireAfterMaxAge() throws {
        let c = try csrf(#", "max_age_s": 3600"#)
        let t = try issue(c, .synchronizer, "s", at: T0)
        #expect(try verify(c, .synchronizer, "s", t, at: T0 + 3599) == .valid)
        #expect(try verify(c, .synchronizer, "s", t, at: T0 + 3600) == .expired)
        // Issued in the future beyond the tolerated skew.
        #expect(try verify(c, .synchronizer, "s", t, at: T0 - 61) == .expired)
        #expect(try verify(c, .synchronizer, "s", t, at: T0 - 60) == .valid)
        // A forged token is invalid, never expired.
        #expect(try verify(c, .synchronizer, "other", t, at: T0 + 10_000) == .invalid)
    }

    @Test func signedDoubleSubmit() throws {
        let c = try csrf()
        let cookie = try issue(c, .doubleSubmit, "binding-1")
        #expect(try doubleSubmit(c, "binding-1", cookie, cookie) == .valid)
        #expect(try doubleSubmit(c, "binding-1", cookie, "") == .missing)
        #expect(try doubleSubmit(c, "binding-1", "", cookie) == .missing)
        let other = try issue(c, .doubleSubmit, "binding-1")
        #expect(try doubleSubmit(c, "binding-1", cookie, other) == .mismatch)
        // An attacker who plants a cookie of his own session (cookie tossing) cannot use it
        // for the victim's session: the binding differs.
        let planted = try issue(c, .doubleSubmit, "attacker-session")
        #expect(try doubleSubmit(c, "binding-1", planted, planted) == .invalid)
        // A synchronizer token is not a double-submit cookie.
        let sync = try issue(c, .synchronizer, "binding-1")
        #expect(try doubleSubmit(c, "binding-1", sync, sync) == .invalid)
    }

    @Test func rotationAndReload() throws {
        let c = try csrf()
        let old = try issue(c, .synchronizer, "s")
        let reload = #"{"key": {"value": "\#(keyB)", "encoding": "hex"}, "previous_keys": [{"value": "\#(keyA)", "encoding": "hex"}]}"#
        try Array(reload.utf8).withRawBytes { (r) throws(BitsecError) in try c.reloadKeys(r) }
        let fresh = try issue(c, .synchronizer, "s")
        #expect(try verify(c, .synchronizer, "s", old) == .valid)
        #expect(try verify(c, .synchronizer, "s", fresh) == .valid)
        // The new key signs: a service with only key A does not accept the fresh token.
        #expect(try verify(try csrf(), .synchronizer, "s", fresh) == .invalid)
        // Dropping the old key refuses its tokens.
        let only = #"{"key": {"value": "\#(keyB)", "encoding": "hex"}}"#
        try Array(only.utf8).withRawBytes { (r) throws(BitsecError) in try c.reloadKeys(r) }
        #expect(try verify(c, .synchronizer, "s", old) == .invalid)
        // A bad reload changes nothing.
        let bad = #"{"key": {"value": "short", "encoding": "raw"}}"#
        expectError(.config, "32 bytes") { try Array(bad.utf8).withRawBytes { (r) throws(BitsecError) in try c.reloadKeys(r) } }
        #expect(try verify(c, .synchronizer, "s", fresh) == .valid)
    }

    /// Checks keep deciding correctly while the keys are replaced from another thread.
    @Test func reloadUnderConcurrentChecks() throws {
        let c = try csrf(#", "previous_keys": [{"value": "\#(keyB)", "encoding": "hex"}]"#)
        let t = try issue(c, .synchronizer, "s")
        let wrong = Atomic<Int>(0)
        let a = #"{"key": {"value": "\#(keyA)", "encoding": "hex"}, "previous_keys": [{"value": "\#(keyB)", "encoding": "hex"}]}"#
        let b = #"{"key": {"value": "\#(keyB)", "encoding": "hex"}, "previous_keys": [{"value": "\#(keyA)", "encoding": "hex"}]}"#
        DispatchQueue.concurrentPerform(iterations: 4) { i in
            for k in 0..<300 {
                if i == 0 {
                    let doc = k % 2 == 0 ? b : a
                    _ = try? Array(doc.utf8).withRawBytes { (r) throws(BitsecError) in try c.reloadKeys(r) }
                } else if (try? verify(c, .synchronizer, "s", t)) != .valid {
                    wrong.add(1, ordering: .relaxed)
                }
            }
        }
        #expect(wrong.load(ordering: .relaxed) == 0)
    }

    @Test func configuration() throws {
        expectError(.config, "32 bytes") { _ = try csrf(key: "0011") }
        expectError(.config, "csrf.key") {
            let ctx = CapabilityContext(config: ConfigContext(allowInlineSecrets: true), redis: nil, audit: nil)
            _ = try CSRFService.read(try ConfigObject(try JSONReader.parse("{}"), path: "csrf"), context: ctx)
        }
        expectError(.config, "allowed_origins") { _ = try csrf(#", "allowed_origins": ["https://a.example.com/path"]"#) }
        expectError(.config, "allowed_origins") { _ = try csrf(#", "allowed_origins": ["*"]"#) }
        expectError(.config, "unknown") { _ = try csrf(#", "typo": 1"#) }
        expectError(.config, "max_age_s") { _ = try csrf(#", "max_age_s": 1"#) }
    }

    @Test func originNormalisation() {
        #expect(CSRFOriginPolicy.normalise("https://App.Example.COM:443") == "https://app.example.com")
        #expect(CSRFOriginPolicy.normalise("http://example.com:80") == "http://example.com")
        #expect(CSRFOriginPolicy.normalise("http://example.com:8080") == "http://example.com:8080")
        #expect(CSRFOriginPolicy.normalise("https://[::1]:8443") == "https://[::1]:8443")
        #expect(CSRFOriginPolicy.normalise("null") == nil)
        #expect(CSRFOriginPolicy.normalise("https://example.com/") == nil)
        #expect(CSRFOriginPolicy.normalise("https://user@example.com") == nil)
        #expect(CSRFOriginPolicy.normalise("https://example.com:99999") == nil)
        #expect(CSRFOriginPolicy.normalise("https://") == nil)
        #expect(CSRFOriginPolicy.normalise("ftp://example.com") == nil)
    }

    @Test func originCheck() throws {
        let c = try csrf(#", "allowed_origins": ["https://app.example.com"]"#)
        let o = c.origins
        // Safe methods are never checked.
        for m in ["GET", "head", "OPTIONS", "TRACE"] { #expect(o.check(method: m, origin: "https://evil.example", fetchSite: "cross-site") == .valid) }
        // Allowed origin, any case, default port.
        #expect(o.check(method: "POST", origin: "https://APP.example.com:443", fetchSite: nil) == .valid)
        #expect(o.check(method: "delete", origin: "https://app.example.com", fetchSite: "cross-site") == .valid)
        // Not allowed.
        #expect(o.check(method: "POST", origin: "https://evil.example", fetchSite: nil) == .originNotAllowed)
        #expect(o.check(method: "POST", origin: "https://app.example.com.evil.example", fetchSite: nil) == .originNotAllowed)
        #expect(o.check(method: "POST", origin: "http://app.example.com", fetchSite: nil) == .originNotAllowed)
        #expect(o.check(method: "POST", origin: "null", fetchSite: nil) == .originNotAllowed)
        #expect(o.check(method: "PUT", origin: "https://evil.example", fetchSite: "cross-site") == .originNotAllowed)
        // Fetch metadata without an allowed origin.
        #expect(o.check(method: "POST", origin: nil, fetchSite: "same-origin") == .valid)
        #expect(o.check(method: "POST", origin: nil, fetchSite: "none") == .valid)
        #expect(o.check(method: "POST", origin: nil, fetchSite: "cross-site") == .crossSite)
        #expect(o.check(method: "POST", origin: nil, fetchSite: "same-site") == .crossSite)
        #expect(o.check(method: "POST", origin: nil, fetchSite: "Same-Origin") == .valid)
        // Neither header: refused by default, accepted with missing_origin allow.
        #expect(o.check(method: "POST", origin: nil, fetchSite: nil) == .originMissing)
        #expect(o.check(method: "POST", origin: "", fetchSite: "") == .originMissing)
        let lenient = try csrf(#", "missing_origin": "allow""#)
        #expect(lenient.origins.check(method: "POST", origin: nil, fetchSite: nil) == .valid)
        #expect(lenient.origins.check(method: "POST", origin: "https://evil.example", fetchSite: nil) == .originNotAllowed)
        // An oversized header matches nothing.
        let huge = "https://app.example.com" + String(repeating: "a", count: 5000)
        #expect(o.check(method: "POST", origin: huge, fetchSite: nil) == .originNotAllowed)
    }

    @Test func reloadIsAudited() throws {
        let sink = RecordingAudit()
        let c = try csrf(audit: sink)
        let doc = #"{"key": {"value": "\#(keyB)", "encoding": "hex"}}"#
        try Array(doc.utf8).withRawBytes { (r) throws(BitsecError) in try c.reloadKeys(r) }
        let bad = #"{"key": {"value": "00", "encoding": "hex"}}"#
        expectError(.config) { try Array(bad.utf8).withRawBytes { (r) throws(BitsecError) in try c.reloadKeys(r) } }
        let events = sink.events.with { $0 }
        #expect(events.map(\.subtype) == ["keys_reloaded", "keys_reloaded"])
        #expect(events.map(\.result) == ["success", "failure"])
        #expect(events.allSatisfy { $0.resource == "csrf" })
    }
}

/// With the host store, a key reload made through one process's runtime reaches every
/// runtime of the region (here a second runtime on the same region) at its next call.
@Suite struct CSRFHostReloadTests {
    @Test func aKeyReloadReachesEveryRuntimeOfTheHost() throws {
        let sections = #""allow_inline_secrets": true, "csrf": {"key": {"value": "\#(keyA)", "encoding": "hex"}}"#
        guard let doc = TestStores.document(.host, sections) else { return }
        let a = try Runtime.open(config: doc)
        defer { a.shutdown() }
        guard let b = try TestStores.peer(of: doc, .host) else { Issue.record("no peer"); return }
        defer { b.shutdown() }
        let ca = try a.require(a.csrf), cb = try b.require(b.csrf)
        let old = try issue(ca, .synchronizer, "s")
        #expect(try verify(cb, .synchronizer, "s", old) == .valid)
        let reload = #"{"key": {"value": "\#(keyB)", "encoding": "hex"}}"#
        try Array(reload.utf8).withRawBytes { (r) throws(BitsecError) in try a.reloadCSRFKeys(r) }
        #expect(try verify(ca, .synchronizer, "s", old) == .invalid)
        b.followHostReloads()  // what every ABI call does first
        #expect(try verify(cb, .synchronizer, "s", old) == .invalid)
        #expect(try verify(cb, .synchronizer, "s", try issue(ca, .synchronizer, "s")) == .valid)
    }
}

private final class RecordingAudit: AuditHook, Sendable {
    let events = Locked<[AutomaticAuditEvent]>([])  // pthread-based: ThreadSanitizer follows it
    var automaticEventsEnabled: Bool { true }
    func emitAutomatic(_ event: AutomaticAuditEvent) { events.with { $0.append(event) } }
}
