import Testing
import Glibc
import Dispatch
import BitsecCore

private let t0: Int64 = 1_800_000_000

/// In process, and through the test run's real redis-server.
private func stores() throws -> [(String, RedisPool?)] {
    var out: [(String, RedisPool?)] = [("memory", nil)]
    if let port = TestRedis.port {
        let rt = try Runtime.open(config: #"{"redis": {"host": "127.0.0.1", "port": \#(port), "command_timeout_ms": 1000}}"#)
        out.append(("redis", rt.redis))
    }
    return out
}

private func unique(_ s: String) -> String { "\(s)-\(getpid())-\(Clock.nowMicros())-\(Int.random(in: 0..<1_000_000))" }

@Suite struct FailureWindowReserveTests {
    /// reserve is check-and-count: 16 threads reserving at once get exactly max_failures;
    /// the block starts at the first refusal, with one audit event.
    @Test func concurrentReservationsNeverExceedTheLimit() throws {
        for (name, redis) in try stores() {
            let audit = RecordingAuditHook()
            let w = FailureWindow(name: "t_reserve", policy: FailureWindowPolicy(maxFailures: 5), redis: redis, audit: audit)
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
    }

    /// refund takes back exactly the reservation; other failures stay.
    @Test func refundTakesBackOneReservation() throws {
        for (name, redis) in try stores() {
            let w = FailureWindow(name: "t_refund", policy: FailureWindowPolicy(maxFailures: 3), redis: redis, audit: nil)
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
    }

    /// Back-off: free failures, then doubling delays capped, and the hard bound over the window.
    @Test func backoffIsBoundedAndClearable() throws {
        for (name, redis) in try stores() {
            let policy = FailureWindowPolicy(maxFailures: 8, windowSeconds: 3600, blockSeconds: 4,
                                             backoff: FailureBackoff(freeFailures: 3, baseDelayMs: 1000, maxDelayMs: 4000))
            let w = FailureWindow(name: "t_backoff", policy: policy, redis: redis, audit: nil)
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
}
