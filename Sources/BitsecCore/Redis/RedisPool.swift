/// The Redis client every cluster-wide feature shares: a bounded pool of connections, safe
/// across threads, with connect and command timeouts and reconnect backoff.
///
/// - A caller takes an idle connection, or opens a new one while fewer than `pool_size` are
///   open, or waits for one up to the command timeout.
/// - When connecting fails, further attempts are refused for a backoff period (doubling up to
///   `reconnect_backoff_max_ms`), so an outage costs callers microseconds, not a connect
///   timeout each. The first success resets the backoff: recovery is automatic.
/// - Every failure is a `backendUnavailable` error with a clear message; nothing hangs beyond
///   the configured timeouts.
///
/// In cluster mode (`config.cluster` set) this object is the facade every feature holds:
/// `command`, `pipeline` and `RedisScript.run` go through `cluster`, which routes each command
/// by its key to one `RedisPool` per node. The standalone path pays one nil check.
public final class RedisPool: @unchecked Sendable {
    public let config: RedisConfig
    /// The router, in cluster mode; nil for a standalone server.
    public let cluster: RedisCluster?
    private let lock = ConditionLock()
    // Guarded by `lock`.
    private var idle: [RedisConnection] = []
    private var open = 0
    private var backoffMs = 0
    private var nextAttemptAt: Int64 = 0
    private var lastFailure = ""

    public init(config: RedisConfig) {
        self.config = config
        cluster = config.cluster.map { RedisCluster(config: config, settings: $0) }
    }

    /// Runs `body` with a connection held exclusively. A connection the body leaves broken is
    /// discarded. If a pooled (previously idle) connection fails before anything is read, the
    /// call is retried once on a fresh connection (the server may have restarted).
    /// In cluster mode the connection is one of any primary: only for keyless commands.
    public func withConnection<R>(_ body: (RedisConnection) throws(BitsecError) -> R) throws(BitsecError) -> R {
        if let cluster { return try cluster.withAnyConnection(body) }
        var (conn, wasIdle) = try acquire()
        do {
            let r = try body(conn)
            release(conn)
            return r
        } catch {
            let broken = conn.broken
            release(conn)
            guard broken, wasIdle, !error.detail.contains("no reply within") else { throw error }
            (conn, wasIdle) = try acquire(forceNew: true)
            do {
                let r = try body(conn)
                release(conn)
                return r
            } catch {
                release(conn)
                throw error
            }
        }
    }

    /// One command on a pooled connection.
    public func command(_ args: [[UInt8]]) throws(BitsecError) -> RedisReply {
        if let cluster { return try cluster.command(args) }
        return try withConnection { (c) throws(BitsecError) -> RedisReply in try c.command(args) }
    }

    /// Several commands in one round trip on one pooled connection (`RedisConnection.pipeline`).
    /// In cluster mode: one pipeline per node that owns some of the commands' slots, the
    /// replies in the commands' order (`RedisCluster.pipeline`).
    public func pipeline(_ commands: [[[UInt8]]]) throws(BitsecError) -> [RedisReply] {
        if let cluster { return try cluster.pipeline(commands) }
        return try withConnection { (c) throws(BitsecError) -> [RedisReply] in try c.pipeline(commands) }
    }

    public func command(_ args: String...) throws(BitsecError) -> RedisReply {
        try command(args.map { Array($0.utf8) })
    }

    /// `PING`; returns the round trip in microseconds.
    public func ping() throws(BitsecError) -> Int64 {
        if let cluster { return try cluster.ping() }
        let start = Clock.nowMicros()
        let r = try command("PING")
        guard r == .status("PONG") else { throw .backend("redis \(config.endpointText): unexpected PING reply") }
        return max(Clock.nowMicros() - start, 0)
    }

    private func acquire(forceNew: Bool = false) throws(BitsecError) -> (RedisConnection, Bool) {
        let deadline = Clock.monotonicMillis() + Int64(config.commandTimeoutMs)
        lock.lock()
        while true {
            if !forceNew, let c = idle.popLast() {
                lock.unlock()
                return (c, true)
            }
            if forceNew, !idle.isEmpty {
                // Drop the other idle connections too: they likely point at the dead server.
                let n = idle.count
                idle.removeAll()
                open -= n
            }
            if open < config.poolSize {
                let now = Clock.monotonicMillis()
                if now < nextAttemptAt {
                    let wait = nextAttemptAt - now
                    let why = lastFailure
                    lock.unlock()
                    throw .backend("redis \(config.endpointText) unavailable (\(why)); next attempt in \(wait) ms")
                }
                open += 1
                lock.unlock()
                do {
                    let c = try RedisConnection.connect(config)
                    lock.withLock { backoffMs = 0; nextAttemptAt = 0 }
                    return (c, false)
                } catch {
                    lock.withLock {
                        open -= 1
                        backoffMs = backoffMs == 0 ? config.backoffInitialMs : min(backoffMs * 2, config.backoffMaxMs)
                        nextAttemptAt = Clock.monotonicMillis() + Int64(backoffMs)
                        lastFailure = error.detail
                        lock.broadcast()
                    }
                    throw error
                }
            }
            if Clock.monotonicMillis() >= deadline || !lock.wait(untilMonotonicMillis: deadline) && Clock.monotonicMillis() >= deadline {
                lock.unlock()
                throw .backend("redis \(config.endpointText): all \(config.poolSize) connections busy for \(config.commandTimeoutMs) ms")
            }
        }
    }

    private func release(_ c: RedisConnection) {
        lock.withLock {
            if c.broken { open -= 1 } else { idle.append(c) }
            lock.signal()
        }
    }

    /// Closes idle connections (runtime close).
    public func shutdown() {
        cluster?.shutdown()
        lock.withLock {
            open -= idle.count
            idle.removeAll()
        }
    }

    /// Connections currently open (for tests and describe).
    public var openConnections: Int { (cluster?.openConnections ?? 0) + lock.withLock { open } }
}
