internal import Synchronization

/// The state of one user's failed attempts.
public enum ThrottleStatus: Sendable, Equatable {
    /// Attempts are allowed; `failures` counted in the current window.
    case open(failures: Int64)
    /// Refused for `retryAfter` more seconds.
    case throttled(retryAfter: Int64)
}

/// Limits failed attempts per user: at most `maxFailures` in a window of `windowSeconds`
/// that starts at the first failure (a fixed window, exact integer arithmetic over the
/// caller's instants). Once the limit is reached, attempts are refused until the window
/// ends; a success resets the count.
///
/// This is the seam the rate limiter (issue 5) can replace: the TOTP service only uses these
/// three operations.
public protocol FailureThrottle: Sendable {
    /// Whether `key` may try at `at`.
    func status(_ key: String, at: Int64) throws(BitsecError) -> ThrottleStatus
    /// Counts one failure at `at`. If the key was already throttled, nothing is counted and
    /// `.throttled` is returned; otherwise `.open(failures:)` with the new count.
    func recordFailure(_ key: String, at: Int64) throws(BitsecError) -> ThrottleStatus
    /// Forgets the failures of `key` (after a success).
    func reset(_ key: String) throws(BitsecError)
}

public struct ThrottlePolicy: Sendable, Equatable {
    public var maxFailures: Int64
    public var windowSeconds: Int64

    public init(maxFailures: Int64 = 5, windowSeconds: Int64 = 300) {
        self.maxFailures = maxFailures
        self.windowSeconds = windowSeconds
    }

    /// The status of a window that started at `start` with `count` failures.
    func evaluate(start: Int64, count: Int64, at: Int64) -> ThrottleStatus {
        let end = start + windowSeconds
        guard at < end, at >= start - windowSeconds else { return .open(failures: 0) }  // expired (or a far-off clock)
        if count >= maxFailures { return .throttled(retryAfter: max(end - at, 1)) }
        return .open(failures: count)
    }
}

/// The in-process throttle (the default without Redis).
public final class InProcessThrottle: FailureThrottle {
    private struct Window { var start: Int64; var count: Int64 }
    private let policy: ThrottlePolicy
    private let windows = Mutex<[String: Window]>([:])
    /// Prune when the table reaches this size; then twice what is left (amortised O(1)).
    private let pruneAt = Mutex<Int>(10_000)

    public init(policy: ThrottlePolicy) { self.policy = policy }

    public func status(_ key: String, at: Int64) -> ThrottleStatus {
        windows.withLock { w in
            guard let s = w[key] else { return .open(failures: 0) }
            return policy.evaluate(start: s.start, count: s.count, at: at)
        }
    }

    public func recordFailure(_ key: String, at: Int64) -> ThrottleStatus {
        windows.withLock { w in
            if let s = w[key] {
                switch policy.evaluate(start: s.start, count: s.count, at: at) {
                case .throttled(let r): return .throttled(retryAfter: r)
                case .open(let n) where n > 0:
                    w[key] = Window(start: s.start, count: n + 1)
                    return .open(failures: n + 1)
                case .open:
                    break
                }
            }
            w[key] = Window(start: at, count: 1)
            pruneAt.withLock { limit in
                if w.count >= limit {
                    prune(&w, at: at)
                    limit = max(10_000, 2 * w.count)
                }
            }
            return .open(failures: 1)
        }
    }

    public func reset(_ key: String) {
        _ = windows.withLock { $0.removeValue(forKey: key) }
    }

    /// Drops the windows that are over (bounded memory under a spray of user names).
    private func prune(_ w: inout [String: Window], at: Int64) {
        w = w.filter { policy.evaluate(start: $0.value.start, count: $0.value.count, at: at) != .open(failures: 0) }
    }

    public var trackedKeys: Int { windows.withLock { $0.count } }
}

/// The throttle shared through Redis: one hash per user (`start`, `count`) updated by a Lua
/// script, so concurrent failures on several instances are all counted. Its TTL is the rest
/// of the window. Instants are the callers' (exact integers; Lua numbers are exact to 2^53).
public final class RedisThrottle: FailureThrottle {
    private let policy: ThrottlePolicy
    private let pool: RedisPool
    private let prefix: String

    public init(policy: ThrottlePolicy, pool: RedisPool) {
        self.policy = policy
        self.pool = pool
        self.prefix = pool.config.keyPrefix + "totp:fail:"
    }

    // Returns {throttled (0/1), count or retry-after}. Mirrors ThrottlePolicy.evaluate.
    private static let recordScript = """
        local at, win, max = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
        local s = redis.call('HMGET', KEYS[1], 'start', 'count')
        local start, count = tonumber(s[1]), tonumber(s[2])
        if start == nil or count == nil or at >= start + win or at < start - win then
          start = at; count = 0
        end
        if count >= max then
          local r = start + win - at
          if r < 1 then r = 1 end
          return {1, r}
        end
        count = count + 1
        redis.call('HSET', KEYS[1], 'start', start, 'count', count)
        local ttl = start + win - at
        if ttl < 1 then ttl = 1 end
        redis.call('EXPIRE', KEYS[1], ttl)
        return {0, count}
        """

    private func key(_ user: String) -> [UInt8] { Array((prefix + user).utf8) }

    public func status(_ user: String, at: Int64) throws(BitsecError) -> ThrottleStatus {
        let r = try pool.command([Array("HMGET".utf8), key(user), Array("start".utf8), Array("count".utf8)])
        guard let a = r.array, a.count == 2 else { throw unexpected(r) }
        guard let start = a[0].text.flatMap({ Int64($0) }), let count = a[1].text.flatMap({ Int64($0) }) else {
            return .open(failures: 0)
        }
        return policy.evaluate(start: start, count: count, at: at)
    }

    public func recordFailure(_ user: String, at: Int64) throws(BitsecError) -> ThrottleStatus {
        let r = try pool.command([Array("EVAL".utf8), Array(Self.recordScript.utf8), Array("1".utf8), key(user),
                                  Array(String(at).utf8), Array(String(policy.windowSeconds).utf8), Array(String(policy.maxFailures).utf8)])
        guard let a = r.array, a.count == 2, let flag = a[0].integer, let n = a[1].integer else { throw unexpected(r) }
        return flag == 1 ? .throttled(retryAfter: n) : .open(failures: n)
    }

    public func reset(_ user: String) throws(BitsecError) {
        let r = try pool.command([Array("DEL".utf8), key(user)])
        guard r.integer != nil else { throw unexpected(r) }
    }

    private func unexpected(_ r: RedisReply) -> BitsecError {
        .backend("redis \(pool.config.endpointText): unexpected reply to the totp throttle (\(r.errorMessage ?? "wrong type"))")
    }
}
