internal import Glibc

/// Wall-clock and monotonic time without Foundation.
public enum Clock {
    /// Seconds since the Unix epoch (UTC).
    @inline(__always)
    public static func nowSeconds() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Int64(ts.tv_sec)
    }

    /// Microseconds since the Unix epoch (UTC).
    public static func nowMicros() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Int64(ts.tv_sec) &* 1_000_000 &+ Int64(ts.tv_nsec / 1000)
    }

    /// Monotonic milliseconds, for timeouts and backoff.
    public static func monotonicMillis() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Int64(ts.tv_sec) &* 1000 &+ Int64(ts.tv_nsec / 1_000_000)
    }

    /// The instant to evaluate at: `at` when positive, otherwise now. (`0` means "now" in the ABI.)
    @inline(__always)
    public static func resolve(_ at: Int64) -> Int64 { at > 0 ? at : nowSeconds() }

    /// Now, with the clock's full (nanosecond) precision.
    public static func now() -> Instant {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Instant(seconds: Int64(ts.tv_sec), nanoseconds: Int32(clamping: ts.tv_nsec))
    }

    /// The instant to evaluate at: `at` seconds (plus `nanoseconds`) when `at` is positive,
    /// otherwise now with sub-second precision.
    @inline(__always)
    public static func resolveInstant(_ at: Int64, nanoseconds: Int32 = 0) -> Instant {
        at > 0 ? Instant(seconds: at, nanoseconds: nanoseconds) : now()
    }
}

/// A point in time with nanosecond precision: whole seconds since the Unix epoch and the
/// nanoseconds after them (always 0 ..< 1_000_000_000, also for negative seconds).
public struct Instant: Comparable, Hashable, Sendable {
    public let seconds: Int64
    public let nanoseconds: Int32

    public static let max = Instant(seconds: Int64.max, nanoseconds: 999_999_999)
    public static let min = Instant(seconds: Int64.min, nanoseconds: 0)

    /// `nanoseconds` outside 0 ..< 1e9 is clamped into it.
    public init(seconds: Int64, nanoseconds: Int32 = 0) {
        self.seconds = seconds
        self.nanoseconds = Swift.min(Swift.max(nanoseconds, 0), 999_999_999)
    }

    public static func < (a: Instant, b: Instant) -> Bool {
        a.seconds != b.seconds ? a.seconds < b.seconds : a.nanoseconds < b.nanoseconds
    }

    /// `self` plus `s` whole seconds, saturating at `Instant.min` / `Instant.max`.
    public func adding(seconds s: Int64) -> Instant {
        let (r, over) = seconds.addingReportingOverflow(s)
        guard !over else { return s > 0 ? .max : .min }
        return Instant(seconds: r, nanoseconds: nanoseconds)
    }

    /// The smallest whole second not before this instant (saturating).
    public var secondsRoundedUp: Int64 {
        nanoseconds > 0 && seconds < Int64.max ? seconds + 1 : seconds
    }

    /// A JSON number as an instant that is never later (`roundUp` false) or never earlier
    /// (`roundUp` true) than the number the literal wrote. Integers are exact. A fraction
    /// arrives as the nearest double; it is moved one unit in the last place in the chosen
    /// direction (covering the literal's rounding) and then rounded to the nanosecond in the
    /// same direction, with one nanosecond to spare for the multiplication's rounding.
    public init(_ n: JSONNumber, roundUp: Bool) {
        if let i = n.int64 {
            self.init(seconds: i)
            return
        }
        let d = roundUp ? n.double.nextUp : n.double.nextDown
        guard d.isFinite, d < 9.2e18 else { self = d < 0 ? .min : .max; return }
        guard d > -9.2e18 else { self = .min; return }
        let whole = d.rounded(.down)
        let fraction = d - whole  // exact: both are doubles of the same magnitude
        var ns = Int64(roundUp ? (fraction * 1e9).rounded(.up) + 1 : (fraction * 1e9).rounded(.down) - 1)
        var s = Int64(whole)
        if ns >= 1_000_000_000 { s += 1; ns -= 1_000_000_000 }
        if ns < 0 { s -= 1; ns += 1_000_000_000 }
        self.init(seconds: s, nanoseconds: Int32(ns))
    }
}
