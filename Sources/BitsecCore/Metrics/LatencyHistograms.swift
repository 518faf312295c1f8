internal import Glibc
internal import Synchronization

/// An operation whose latency bitsec measures (the `operation` label of
/// `bitsec_operation_duration_seconds`, or the Redis round trip of
/// `bitsec_redis_roundtrip_seconds`).
public enum TimedOperation: Int, CaseIterable, Sendable {
    case tokenVerify, tokenSign, permissionCheck, rateLimitTake, bruteforce, loginGuard,
         totpVerify, backupCodeVerify, fieldEncrypt, fieldDecrypt, auditEmit, redisRoundTrip

    /// The label value.
    public var label: String {
        switch self {
        case .tokenVerify: "token_verify"
        case .tokenSign: "token_sign"
        case .permissionCheck: "permission_check"
        case .rateLimitTake: "rate_limit_take"
        case .bruteforce: "bruteforce"
        case .loginGuard: "login_guard"
        case .totpVerify: "totp_verify"
        case .backupCodeVerify: "backup_code_verify"
        case .fieldEncrypt: "field_encrypt"
        case .fieldDecrypt: "field_decrypt"
        case .auditEmit: "audit_emit"
        case .redisRoundTrip: "redis_roundtrip"
        }
    }
}

/// The `metrics` configuration section.
///
/// - `histograms` (`on`, `sampled`, `off`; default `sampled`): whether calls are timed. `on`
///   times every call (two reads of the monotonic clock and two relaxed atomic adds);
///   `sampled` times one call in `sample_every` per thread group and counts it `sample_every`
///   times, so rates and quantiles still estimate all calls; `off` costs one branch. The
///   default is `sampled`: measured, `on` adds about 60 ns of CPU time a call (two clock
///   reads), +61 % to a permission check and +29 % to an in-process rate-limit take, where
///   `sampled` adds 6 to 10 ns (BENCHMARKS.md, "Latency histograms").
/// - `sample_every` (power of two, 2 ... 65536; default 16): the sampling period of `sampled`.
public struct MetricsSettings: Sendable, Equatable {
    public enum Mode: String, Sendable { case on, sampled, off }
    public var histograms: Mode = .sampled
    public var sampleEvery: UInt64 = 16

    public init(histograms: Mode = .sampled, sampleEvery: UInt64 = 16) {
        self.histograms = histograms
        self.sampleEvery = sampleEvery
    }

    /// Reads the section (nil: the defaults).
    public static func read(_ o: ConfigObject?) throws(BitsecError) -> MetricsSettings {
        guard let o else { return MetricsSettings() }
        var s = MetricsSettings()
        let mode = try o.choice("histograms", ["on", "sampled", "off"], default: "sampled")
        s.histograms = Mode(rawValue: mode) ?? .sampled
        let every = try o.int("sample_every", in: 2...65_536, default: 16)
        guard every & (every - 1) == 0 else {
            throw .config("\(o.fieldPath("sample_every")): must be a power of two (2, 4, ..., 65536), not \(every)")
        }
        s.sampleEvery = UInt64(every)
        try o.finish()
        return s
    }
}

/// Per-operation latency histograms with fixed buckets, recorded without a lock: each
/// operation has `stripes` rows of relaxed atomic counters, and a thread writes the row its
/// thread id hashes to (threads rarely share a row, so the adds rarely contend for a cache
/// line). A scrape sums the rows; counts are monotonic, so a scrape that races with calls
/// sees each call either fully or not at all per counter (a bucket and the sum may disagree
/// by the calls in flight, as with any Prometheus client).
///
/// The clock is `CLOCK_MONOTONIC` (the vDSO: no system call). Durations are kept in
/// nanoseconds; the exposition converts to seconds.
///
/// The histograms are this process's: every series carries a `pid` label, so that with
/// several worker processes behind one scrape address each worker's series stays monotonic
/// whichever worker answers (Prometheus sums them with `sum by (le, operation)`). A child of
/// `fork()` starts from zero: it does not repeat its parent's observations under its own pid.
public final class LatencyHistograms: @unchecked Sendable, ForkAware {
    /// Upper bounds of the finite buckets, in nanoseconds: 1 µs to 1 s in 1-2.5-5 steps. A
    /// final `+Inf` bucket takes the rest.
    public static let boundsNanos: [UInt64] = [
        1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
        1_000_000, 2_500_000, 5_000_000, 10_000_000, 25_000_000, 50_000_000,
        100_000_000, 250_000_000, 500_000_000, 1_000_000_000,
    ]
    /// `le` label values of the buckets, `+Inf` last.
    static let boundLabels: [String] = [
        "1e-06", "2.5e-06", "5e-06", "1e-05", "2.5e-05", "5e-05", "0.0001", "0.00025", "0.0005",
        "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "+Inf",
    ]
    static let bucketCount = boundsNanos.count + 1
    /// Words of one row: the buckets (not cumulative), the sum of nanoseconds, the sampling
    /// tick; padded to 24 words (three cache lines) so rows never share a line.
    static let sumSlot = bucketCount
    static let tickSlot = bucketCount + 1
    static let rowWords = 24
    static let stripes = 16
    static let operations = TimedOperation.allCases.count

    public let settings: MetricsSettings
    private let words: UnsafeMutableRawPointer
    private let sampleMask: UInt64

    public init(settings: MetricsSettings = MetricsSettings()) {
        self.settings = settings
        sampleMask = settings.sampleEvery &- 1
        let bytes = Self.operations * Self.stripes * Self.rowWords * 8
        words = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
        words.initializeMemory(as: UInt64.self, repeating: 0, count: bytes / 8)
        if settings.histograms != .off { ForkSafety.register(self) }
    }

    deinit {
        if settings.histograms != .off { ForkSafety.unregister(id: ObjectIdentifier(self)) }
        words.deallocate()
    }

    func prepareFork() {}
    func afterForkInParent() {}
    /// The child is single-threaded here: its counters start again from zero.
    func afterForkInChild() {
        let n = Self.operations * Self.stripes * Self.rowWords
        for i in 0..<n { (words + i &* 8).assumingMemoryBound(to: Atomic<UInt64>.self).pointee.store(0, ordering: .relaxed) }
    }

    public var enabled: Bool { settings.histograms != .off }

    @inline(__always)
    private func word(_ op: TimedOperation, _ stripe: Int, _ slot: Int) -> UnsafeMutablePointer<Atomic<UInt64>> {
        (words + ((op.rawValue &* Self.stripes &+ stripe) &* Self.rowWords &+ slot) &* 8).assumingMemoryBound(to: Atomic<UInt64>.self)
    }

    /// The calling thread's row: a multiplicative hash of its pthread id (the top 4 bits).
    @inline(__always)
    private static func stripe() -> Int {
        Int(truncatingIfNeeded: (UInt64(truncatingIfNeeded: pthread_self()) &* 0x9E37_79B9_7F4A_7C15) >> 60)
    }

    @inline(__always)
    static func monotonicNanos() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(truncatingIfNeeded: ts.tv_sec) &* 1_000_000_000 &+ UInt64(truncatingIfNeeded: ts.tv_nsec)
    }

    /// Starts timing one call: the start instant, or 0 when this call is not measured (off,
    /// or not this call's turn when sampled). Pass the result to `finish`.
    @inline(__always)
    public func start(_ op: TimedOperation) -> UInt64 {
        switch settings.histograms {
        case .off: return 0
        case .on: return Self.monotonicNanos() | 1
        case .sampled:
            // A relaxed load and store, not an atomic increment (a locked instruction costs
            // more than the sampling saves): two threads of one row that race may read the
            // same tick and both be measured, which only makes the sampling slightly denser.
            let tick = word(op, Self.stripe(), Self.tickSlot)
            let n = tick.pointee.load(ordering: .relaxed)
            tick.pointee.store(n &+ 1, ordering: .relaxed)
            return n & sampleMask == 0 ? Self.monotonicNanos() | 1 : 0
        }
    }

    /// Ends timing a call begun with `start` (nothing when it returned 0).
    @inline(__always)
    public func finish(_ op: TimedOperation, _ started: UInt64) {
        guard started != 0 else { return }
        let now = Self.monotonicNanos()
        record(op, nanos: now >= started ? now &- started : 0)
    }

    /// Adds one observation (weighted by `sample_every` when sampled).
    public func record(_ op: TimedOperation, nanos: UInt64) {
        var b = 0
        let bounds = Self.boundsNanos
        while b < bounds.count && nanos > bounds[b] { b &+= 1 }
        let weight: UInt64 = settings.histograms == .sampled ? settings.sampleEvery : 1
        let s = Self.stripe()
        word(op, s, b).pointee.wrappingAdd(weight, ordering: .relaxed)
        word(op, s, Self.sumSlot).pointee.wrappingAdd(nanos &* weight, ordering: .relaxed)
    }

    /// One operation's totals over every row.
    public struct Snapshot: Sendable, Equatable {
        /// Per bucket (not cumulative), `+Inf` last.
        public var buckets: [UInt64]
        public var sumNanos: UInt64
        public var count: UInt64 { buckets.reduce(0, &+) }
    }

    public func snapshot(_ op: TimedOperation) -> Snapshot {
        var buckets = [UInt64](repeating: 0, count: Self.bucketCount)
        var sum: UInt64 = 0
        for s in 0..<Self.stripes {
            for b in 0..<Self.bucketCount { buckets[b] &+= word(op, s, b).pointee.load(ordering: .relaxed) }
            sum &+= word(op, s, Self.sumSlot).pointee.load(ordering: .relaxed)
        }
        return Snapshot(buckets: buckets, sumNanos: sum)
    }

    /// Seconds from nanoseconds, in a form Prometheus parsers read (`123.000456789`).
    static func seconds(_ ns: UInt64) -> String {
        let frac = String(ns % 1_000_000_000)
        return "\(ns / 1_000_000_000).\(String(repeating: "0", count: 9 - frac.count))\(frac)"
    }

    private static func family(_ name: String, _ help: String, _ series: [(label: String?, snap: Snapshot)]) -> String {
        var out = "# HELP \(name) \(help)\n# TYPE \(name) histogram\n"
        let pid = "pid=\"\(getpid())\""
        for (label, snap) in series {
            let sel = label.map { "operation=\"\($0)\",\(pid)" } ?? pid
            var cumulative: UInt64 = 0
            for (i, le) in boundLabels.enumerated() {
                cumulative &+= snap.buckets[i]
                out += "\(name)_bucket{\(sel),le=\"\(le)\"} \(cumulative)\n"
            }
            let braces = "{\(sel)}"
            out += "\(name)_sum\(braces) \(seconds(snap.sumNanos))\n"
            out += "\(name)_count\(braces) \(cumulative)\n"
        }
        return out
    }

    /// The exposition text of `ops` (the operations of the configured capabilities) and, when
    /// `redis` is true, of the Redis round trip. Empty when histograms are off.
    public func prometheusText(_ ops: [TimedOperation], redis: Bool) -> String {
        guard enabled else { return "" }
        var out = ""
        let timed = ops.filter { $0 != .redisRoundTrip }
        if !timed.isEmpty {
            out += Self.family("bitsec_operation_duration_seconds",
                               "Time spent inside bitsec calls, per operation, measured by the library (this process).",
                               timed.map { (label: $0.label, snap: snapshot($0)) })
        }
        if redis {
            out += Self.family("bitsec_redis_roundtrip_seconds",
                               "Redis command or pipeline round trips, from the write to the last reply (this process).",
                               [(label: nil, snap: snapshot(.redisRoundTrip))])
        }
        return out
    }
}
