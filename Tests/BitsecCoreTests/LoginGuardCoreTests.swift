import Testing
import Glibc
import Dispatch
import BitsecCore

private let t0: Int64 = 1_800_000_000

/// The rate_limits section in a runtime whose features are all in `kind` (through the
/// configuration), read again with the audit hook when given.
private func limits(_ kind: TestStore, _ section: String, audit: (any AuditHook)? = nil) throws -> RateLimitService? {
    guard let rt = try TestStores.runtime(kind, "\"rate_limits\": \(section)") else { return nil }
    guard let audit else { return try rt.require(rt.rateLimits) }
    let doc = try JSONReader.parse(Array(section.utf8))
    return try RateLimitService.read(try ConfigObject(doc, path: "rate_limits"), context: TestStores.context(rt, audit: audit))
}

private func unique(_ s: String) -> String { "\(s)-\(getpid())-\(Clock.nowMicros())-\(Int.random(in: 0..<1_000_000))" }

@Suite struct FailureWindowReserveTests {
    /// reserve is check-and-count: 16 threads reserving at once get exactly max_failures;
    /// the block starts at the first refusal, with one audit event.
    @Test(arguments: TestStores.kinds) func concurrentReservationsNeverExceedTheLimit(kind: TestStore) throws {
        let name = kind.rawValue
        let audit = RecordingAuditHook()
        guard let w = try limits(kind, #"{"brute_force": {"max_failures": 5}}"#, audit: audit)?.bruteForce else { return }
        let key = unique("k")
        nonisolated(unsafe) let got = UnsafeMutablePointer<Int>.allocate(capacity: 16)
        got.initialize(repeating: 0, count: 16)
        defer { got.deallocate() }
        DispatchQueue.concurrentPerform(iterations: 16) { i in
            if let r = try? w.reserve(key: key, at: t0), r.allowed { got[i] = 1 }
        }
        #expect((0..<16).reduce(0) { $0 + got[$1] } == 5, "\(name)")
        #expect(audit.events.filter { $0.hasPrefix("authentication/blocked/") }.count == 1, "\(name): \(audit.events)")
        let r = try w.reserve(key: key, at: t0 + 10)
        #expect(!r.allowed && r.retryAfterMs > 0 && r.retryAfterMs <= 3_600_000, "\(name)")
    }

    /// refund takes back exactly the reservation; other failures stay.
    @Test(arguments: TestStores.kinds) func refundTakesBackOneReservation(kind: TestStore) throws {
        let name = kind.rawValue
        guard let w = try limits(kind, #"{"brute_force": {"max_failures": 3}}"#)?.bruteForce else { return }
        let key = unique("k")
        let a = try w.reserve(key: key, at: t0)
        let b = try w.reserve(key: key, at: t0 + 1)
        #expect(a.allowed && b.allowed && b.failures == 2, "\(name)")
        try w.refund(key: key, ticketMs: b.ticketMs)
        let c = try w.reserve(key: key, at: t0 + 2)
        #expect(c.allowed && c.failures == 2 && c.failureRetryAfterMs == 0, "\(name): \(c)")
        let d = try w.reserve(key: key, at: t0 + 3)
        #expect(d.allowed && d.failures == 3 && d.failureRetryAfterMs == 3_600_000, "\(name): \(d)")
        #expect(try !w.reserve(key: key, at: t0 + 4).allowed, "\(name)")
    }

    /// Back-off: free failures, then doubling delays capped, and the hard bound over the window.
    @Test(arguments: TestStores.kinds) func backoffIsBoundedAndClearable(kind: TestStore) throws {
        let name = kind.rawValue
        let section = #"{"login_guard": {"account": {"free_failures": 3, "base_delay_seconds": 1, "max_delay_seconds": 4, "max_failures": 8, "window_seconds": 3600}}}"#
        guard let w = try limits(kind, section)?.loginGuard.account else { return }
        #expect(w.policy == FailureWindowPolicy(maxFailures: 8, windowSeconds: 3600, blockSeconds: 4,
                                                backoff: FailureBackoff(freeFailures: 3, baseDelayMs: 1000, maxDelayMs: 4000)))
        let key = unique("acct")
        var at = t0
        var accepted = 0
        var longest: Int64 = 0
        while at < t0 + 120 {
            let r = try w.reserve(key: key, at: at)
            if r.allowed { accepted += 1 } else if r.failures < 8 { longest = max(longest, r.retryAfterMs) }
            at += 1
        }
        #expect(accepted == 8, "\(name): the hard bound over the window")
        #expect(longest <= 4000 && longest > 0, "\(name): \(longest)")
        try w.clear(key: key)
        let r = try w.reserve(key: key, at: at)
        #expect(r.allowed && r.failures == 1, "\(name): after clear: \(r)")
    }
}
