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
}
