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
/// - Sentinel mode (`"mode": "sentinel"`): a new connection goes to the primary the sentinels
///   name (`SENTINEL get-master-addr-by-name`, asked in the configured order, first answer
///   wins), and is used only once `ROLE` confirms the server is a master: a replica is
///   refused, so nothing is ever written to one. A connection error or a `READONLY` reply
///   forgets the primary and drops the idle connections; the next connection asks the
///   sentinels again, so a failover is followed without a restart.
/// - Cluster mode (`"mode": "cluster"`, `config.cluster` set): this object is the facade
///   every feature holds: `command`, `pipeline`, the replicated writes and `RedisScript.run`
///   go through `cluster`, which routes each command by its key to one `RedisPool` per node
///   (each built with `RedisConfig.aimed(at:port:)`: TLS, credentials and timeouts apply to
///   every node). The standalone path pays one nil check.
/// - After `fork()` the child drops every inherited connection (the per-node pools of a
///   cluster too) and opens its own on first use.
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
    /// Sentinel mode: the primary last discovered and confirmed (nil: ask the sentinels).
    private var primary: (host: String, port: Int32)? = nil

    public init(config: RedisConfig) {
        self.config = config
        cluster = config.cluster.map { RedisCluster(config: config, settings: $0) }
        ForkSafety.register(self)
    }

    /// A node pool of a cluster router: its fork handling is driven by the router (under the
    /// router's lock), so it is not registered on its own.
    init(nodeConfig: RedisConfig) {
        self.config = nodeConfig
        cluster = nil
    }

    deinit { ForkSafety.unregister(id: ObjectIdentifier(self)) }

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

    /// One write that must survive a failover: the command, then, when `wait_replicas` is
    /// set and `acknowledged(reply)` says the write happened, `WAIT wait_replicas
    /// wait_timeout_ms` on the same connection (a second round trip). Fewer replicas than
    /// asked within the timeout is a `backendUnavailable` error (the write is on the primary
    /// but could be lost in a failover).
    /// In cluster mode the command is routed by its key and the `WAIT` follows it on the
    /// connection of the node that took the write.
    public func commandReplicated(_ args: [[UInt8]], acknowledged: (RedisReply) -> Bool) throws(BitsecError) -> RedisReply {
        if let cluster {
            // The WAIT failure is kept out of the routing loop: a thrown error there would be
            // taken for an unreachable node and the write sent again.
            var waitError: BitsecError? = nil
            let r = try cluster.execute(slot: ClusterSlot.of(command: args)) { (c) throws(BitsecError) -> RedisReply in
                let r = try c.command(args)
                if acknowledged(r) {
                    do throws(BitsecError) { try waitForReplicas(c) } catch { waitError = error }
                }
                return r
            }
            if let waitError { throw waitError }
            return r
        }
        return try withConnection { (c) throws(BitsecError) -> RedisReply in
            let r = try c.command(args)
            if acknowledged(r) { try waitForReplicas(c) }
            return r
        }
    }

    /// `pipeline`, then `WAIT` as in `commandReplicated` when `acknowledged(replies)`.
    /// In cluster mode the commands may live on several nodes: without `wait_replicas` they
    /// go as `pipeline`; with it each is routed alone and WAITed for on its own node
    /// (`clusterPipelineReplicated`).
    public func pipelineReplicated(_ commands: [[[UInt8]]], acknowledged: ([RedisReply]) -> Bool) throws(BitsecError) -> [RedisReply] {
        if cluster != nil {
            return try clusterPipelineReplicated(commands, acknowledged: acknowledged)
        }
        return try withConnection { (c) throws(BitsecError) -> [RedisReply] in
            let r = try c.pipeline(commands)
            if acknowledged(r) { try waitForReplicas(c) }
            return r
        }
    }

    /// Cluster mode: the commands one after the other, each routed by its key; after command
    /// `i`, when `acknowledged` holds for the replies known so far (the later ones read as
    /// null), `WAIT` on the same connection, i.e. on the node that took that write.
    private func clusterPipelineReplicated(_ commands: [[[UInt8]]], acknowledged: ([RedisReply]) -> Bool) throws(BitsecError) -> [RedisReply] {
        guard let cluster else { return [] }
        guard config.waitReplicas > 0 else { return try cluster.pipeline(commands) }
        var replies = [RedisReply](repeating: .null, count: commands.count)
        for (i, args) in commands.enumerated() {
            var waitError: BitsecError? = nil
            let known = replies
            replies[i] = try cluster.execute(slot: ClusterSlot.of(command: args)) { (c) throws(BitsecError) -> RedisReply in
                let r = try c.command(args)
                if RedisCluster.redirect(r.errorMessage ?? "") == nil {
                    var sofar = known
                    sofar[i] = r
                    if acknowledged(sofar) {
                        do throws(BitsecError) { try waitForReplicas(c) } catch { waitError = error }
                    }
                }
                return r
            }
            if let waitError { throw waitError }
        }
        return replies
    }

    private func waitForReplicas(_ c: RedisConnection) throws(BitsecError) {
        let n = config.waitReplicas
        guard n > 0 else { return }
        let r = try c.command([Array("WAIT".utf8), Array(String(n).utf8), Array(String(config.waitTimeoutMs).utf8)],
                              extraTimeoutMs: config.waitTimeoutMs)
        guard let got = r.integer else {
            throw .backend("redis \(config.endpointText): WAIT failed: \(r.errorMessage ?? "unexpected reply")")
        }
        guard got >= Int64(n) else {
            throw .backend("redis \(config.endpointText): written on the primary but acknowledged by \(got) of \(n) replicas within \(config.waitTimeoutMs) ms")
        }
    }

    /// A new connection: to the configured server, or in sentinel mode to the confirmed primary.
    private func connectNew() throws(BitsecError) -> RedisConnection {
        guard config.mode == .sentinel else { return try RedisConnection.connect(config) }
        let known = lock.withLock { primary }
        let target: (host: String, port: Int32)
        if let known { target = known } else { target = try discoverPrimary() }
        let conn: RedisConnection
        do throws(BitsecError) {
            conn = try RedisConnection.connect(config.aimed(at: target.host, port: target.port))
            let role = try conn.command([Array("ROLE".utf8)])
            guard case .array(let a) = role, a.first?.text == "master" else {
                throw .backend("redis \(config.endpointText): \(target.host):\(target.port) is not the primary (ROLE: \(role.array?.first?.text ?? role.errorMessage ?? "unexpected reply")); asking the sentinels again")
            }
        } catch {
            forgetPrimary()
            throw error
        }
        lock.withLock { primary = target }
        return conn
    }

    /// Asks the sentinels, in order, for the primary's address.
    private func discoverPrimary() throws(BitsecError) -> (host: String, port: Int32) {
        var why: [String] = []
        for s in config.sentinels {
            do {
                let c = try RedisConnection.connect(config.sentinelConfig(s.host, s.port))
                let r = try c.command([Array("SENTINEL".utf8), Array("get-master-addr-by-name".utf8), Array(config.masterName.utf8)])
                if case .array(let a) = r, a.count == 2, let h = a[0].text, !h.isEmpty, h.utf8.count <= 255, !h.utf8.contains(0),
                   let p = a[1].text.flatMap({ Int32($0) }), (1...65535).contains(p) {
                    return (h, p)
                }
                why.append("\(s.host):\(s.port): \(r.errorMessage ?? "no primary named \(config.masterName)")")
            } catch {
                why.append(error.detail)
            }
        }
        throw .backend("redis \(config.endpointText): no sentinel named the primary (\(why.prefix(3).joined(separator: "; ")))")
    }

    /// Sentinel mode: the primary may have changed; drop it and the idle connections to it.
    private func forgetPrimary() {
        guard config.mode == .sentinel else { return }
        lock.withLock {
            primary = nil
            open -= idle.count
            idle.removeAll()
        }
    }

    /// The primary currently used in sentinel mode (`host:port`), nil before discovery.
    public var currentPrimary: String? { lock.withLock { primary.map { "\($0.host):\($0.port)" } } }

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
                    let c = try connectNew()
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
        if c.broken { forgetPrimary() }
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

/// After `fork()` the child must never use the parent's sockets: a command written on a
/// shared connection would interleave with the parent's and each would read the other's
/// replies. The child forgets every connection (idle ones are closed in the child only,
/// which leaves the parent's connection open; ones in use by the parent's other threads are
/// abandoned) and opens its own on first use.
extension RedisPool: ForkAware {
    func prepareFork() {
        lock.lock()
        cluster?.prepareFork()
    }
    func afterForkInParent() {
        cluster?.afterForkInParent()
        lock.unlock()
    }
    func afterForkInChild() {
        cluster?.afterForkInChild()
        // By index (no new witness tables in the child: ForkSafety.child).
        var i = idle.count
        while i > 0 { i -= 1; idle[i].abandonAfterFork() }
        idle.removeAll()
        open = 0
        backoffMs = 0
        nextAttemptAt = 0
        lock.unlock()
    }
}
