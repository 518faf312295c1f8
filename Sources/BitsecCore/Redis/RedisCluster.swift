internal import Glibc

/// Redis Cluster routing above one `RedisPool` per node (`"mode": "cluster"`).
///
/// - The slot map (slot -> primary) comes from `CLUSTER SLOTS`, asked of the known primaries
///   then the configured seeds. It is refreshed every `cluster_refresh_ms`, after a redirect,
///   and when a node stops answering (a failover moves its slots to a replica).
/// - A command goes to the primary that owns its key's slot (`ClusterSlot`).
/// - `MOVED`: the slot's owner is updated and the command retried there, but only when the map
///   knows the address; an unknown address triggers a map refresh and the command follows the
///   new map: the client never connects to an address only a reply named.
/// - `ASK` (a slot being migrated): `ASKING` then the command, once, on the importing node.
/// - `TRYAGAIN`, `CLUSTERDOWN`, `LOADING`, `READONLY`, `MASTERDOWN`: retried after a short
///   doubling pause (5 ms up to 100 ms; `READONLY` and `CLUSTERDOWN` refresh the map first).
/// - At most `cluster_max_redirects` redirects and retries per command; then, or when the
///   owner cannot be reached and the map names no other, the call fails as
///   `backendUnavailable`, and the callers' failure policies apply.
/// - A pipeline is split by owning node, each part sent as one pipeline, and the replies put
///   back in the order of the commands; a command answered with a redirect is retried alone.
public final class RedisCluster: @unchecked Sendable {
    public typealias Node = RedisClusterSettings.Node

    let config: RedisConfig
    let settings: RedisClusterSettings
    private let lock = ConditionLock()
    // Guarded by `lock`.
    /// slot -> index in `nodes` of its primary; `noOwner` when the map has none.
    private var owners: [UInt16]
    /// Every node ever seen (append-only, so indices stay valid) and its pool.
    private var nodes: [Node] = []
    private var pools: [RedisPool] = []
    private var index: [Node: Int] = [:]
    /// The nodes of the latest map (primaries and replicas): the only redirect targets.
    private var known: Set<Node> = []
    private var primaries: [Int] = []
    private var loadedAtMs: Int64 = 0
    private var lastAttemptMs: Int64 = 0
    private var refreshing = false
    private var rotation = 0
    private var refreshCount: Int64 = 0
    private var redirectCount: Int64 = 0
    private var askCount: Int64 = 0

    private static let noOwner = UInt16.max
    /// Refreshes asked for by errors are at most this often (a storm of MOVED replies during a
    /// reshard costs one `CLUSTER SLOTS` per interval, not one per command).
    static let minRefreshGapMs: Int64 = 50

    init(config: RedisConfig, settings: RedisClusterSettings) {
        self.config = config
        self.settings = settings
        owners = [UInt16](repeating: Self.noOwner, count: ClusterSlot.count)
    }

    // MARK: - Commands

    /// One command, routed by its key (`ClusterSlot.of(command:)`).
    public func command(_ args: [[UInt8]]) throws(BitsecError) -> RedisReply {
        try execute(slot: ClusterSlot.of(command: args)) { (c) throws(BitsecError) -> RedisReply in try c.command(args) }
    }

    /// One command encoded in RESP, routed by its key (`ClusterSlot.of(resp:)`).
    public func command(resp: [UInt8]) throws(BitsecError) -> RedisReply {
        try execute(slot: ClusterSlot.of(resp: resp)) { (c) throws(BitsecError) -> RedisReply in try c.command(resp: resp) }
    }

    /// Several commands: one pipeline per owning node, replies in the commands' order.
    public func pipeline(_ commands: [[[UInt8]]]) throws(BitsecError) -> [RedisReply] {
        guard !commands.isEmpty else { return [] }
        try refreshIfDue()
        let slots = commands.map { ClusterSlot.of(command: $0) }
        // Group the commands by the node that owns their slot (first-seen order).
        var groups: [(node: Int?, members: [Int])] = []
        lock.withLock {
            for (i, s) in slots.enumerated() {
                let o = s.map { Int(owners[$0]) }.flatMap { $0 == Int(Self.noOwner) ? nil : $0 } ?? primaries.first
                if let g = groups.firstIndex(where: { $0.node == o }) { groups[g].members.append(i) } else { groups.append((o, [i])) }
            }
        }
        var replies = [RedisReply](repeating: .null, count: commands.count)
        for g in groups {
            var done = false
            if let n = g.node, let pool = pool(at: n) {
                let part = g.members.map { commands[$0] }
                if let rs = try? pool.pipeline(part), rs.count == part.count {
                    for (k, i) in g.members.enumerated() { replies[i] = rs[k] }
                    done = true
                } else {
                    requestRefresh()
                }
            }
            // Redirected, refused or unreachable: each command alone through the routing loop.
            for i in g.members where !done || Self.isRedirectOrRetry(replies[i]) {
                let args = commands[i]
                replies[i] = try execute(slot: slots[i]) { (c) throws(BitsecError) -> RedisReply in try c.command(args) }
            }
        }
        return replies
    }

    /// Runs `body` on a connection of any primary (keyless commands: `PING`, `SCRIPT`).
    public func withAnyConnection<R>(_ body: (RedisConnection) throws(BitsecError) -> R) throws(BitsecError) -> R {
        try refreshIfDue()
        guard let p = lock.withLock({ primaries.isEmpty ? nil : pools[primaries[0]] }) else {
            throw .backend("redis \(config.endpointText): no node is known")
        }
        return try p.withConnection(body)
    }

    /// The routing loop of one command: `send` writes it on a connection and reads the reply.
    public func execute(slot: Int?, _ send: (RedisConnection) throws(BitsecError) -> RedisReply) throws(BitsecError) -> RedisReply {
        try refreshIfDue()
        var attempts = 0
        var askNode: Int? = nil
        var pauseMs: UInt32 = 5
        while true {
            let target: Int, pool: RedisPool
            if let a = askNode, let p = self.pool(at: a) {
                (target, pool) = (a, p)
            } else if let t = lookup(slot) {
                (target, pool) = t
            } else {
                try refresh()
                guard let t = lookup(slot) else {
                    throw .backend("redis \(config.endpointText): no node serves slot \(slot ?? -1)")
                }
                (target, pool) = t
            }
            let asking = askNode != nil
            askNode = nil
            let reply: RedisReply
            do {
                reply = try pool.withConnection { (c) throws(BitsecError) -> RedisReply in
                    if asking {
                        let r = try c.command([Array("ASKING".utf8)])
                        if let e = r.errorMessage { return .error(e) }
                    }
                    return try send(c)
                }
            } catch {
                // The node does not answer: a failover may have moved its slots. Retry at once
                // only if a fresh map names another owner; otherwise the caller's policy applies.
                attempts += 1
                guard attempts <= settings.maxRedirects, slot != nil else { throw error }
                try? refresh()
                guard let now = owner(of: slot), now != target else { throw error }
                continue
            }
            guard case .error(let e) = reply, let kind = Self.redirect(e) else { return reply }
            attempts += 1
            lock.withLock { redirectCount += 1 }
            guard attempts <= settings.maxRedirects else {
                throw .backend("redis \(config.endpointText): gave up after \(attempts - 1) redirects and retries (last: \(Self.firstWord(e)))")
            }
            switch kind {
            case .moved(let s, let addr):
                let node = addr.host.isEmpty ? Node(host: nodeAt(target).host, port: addr.port) : addr
                if !learnOwner(slot: s, node: node) { try refresh() } else { requestRefresh() }
            case .ask(_, let addr):
                lock.withLock { askCount += 1 }
                let node = addr.host.isEmpty ? Node(host: nodeAt(target).host, port: addr.port) : addr
                var i = knownIndex(node)
                if i == nil {
                    try refresh()
                    i = knownIndex(node)
                }
                guard let i else { throw .backend("redis \(config.endpointText): ASK to a node the slot map does not list") }
                askNode = i
            case .retry(let refreshFirst):
                if refreshFirst { try? refresh() }
                usleep(pauseMs * 1000)
                pauseMs = min(pauseMs * 2, 100)
            }
        }
    }

    // MARK: - Redirect replies

    public enum Redirect: Equatable, Sendable {
        case moved(slot: Int, Node)
        case ask(slot: Int, Node)
        case retry(refreshFirst: Bool)
    }

    /// The redirect or retry a Redis error reply asks for (nil: a plain error).
    public static func redirect(_ e: String) -> Redirect? {
        let u = Array(e.utf8)
        func starts(_ p: String) -> Bool { u.starts(with: p.utf8) && (u.count == p.utf8.count || u[p.utf8.count] == 32) }
        if starts("MOVED") || starts("ASK") {
            let parts = e.split(separator: " ", omittingEmptySubsequences: true)
            guard parts.count >= 3, let slot = Int(parts[1]), (0..<ClusterSlot.count).contains(slot) else { return nil }
            let addr = String(parts[2])
            let node: Node
            if addr.hasPrefix(":"), let p = Int32(addr.dropFirst()), (1...65535).contains(p) {
                node = Node(host: "", port: p)
            } else {
                guard let n = RedisClusterSettings.parse(addr) else { return nil }
                node = n
            }
            return starts("MOVED") ? .moved(slot: slot, node) : .ask(slot: slot, node)
        }
        if starts("TRYAGAIN") || starts("LOADING") || starts("MASTERDOWN") { return .retry(refreshFirst: false) }
        if starts("CLUSTERDOWN") || starts("READONLY") { return .retry(refreshFirst: true) }
        return nil
    }

    static func isRedirectOrRetry(_ r: RedisReply) -> Bool {
        if case .error(let e) = r { return redirect(e) != nil }
        return false
    }

    private static func firstWord(_ e: String) -> String { String(e.split(separator: " ").first ?? "") }

    // MARK: - The slot map

    private func owner(of slot: Int?) -> Int? {
        lock.withLock {
            guard let slot else { return primaries.first }
            let o = owners[slot]
            return o == Self.noOwner ? nil : Int(o)
        }
    }

    /// The owner of `slot` (any primary for nil) and its pool, under one lock.
    @inline(__always)
    private func lookup(_ slot: Int?) -> (Int, RedisPool)? {
        lock.withLock {
            let i: Int
            if let slot {
                let o = owners[slot]
                guard o != Self.noOwner else { return nil }
                i = Int(o)
            } else {
                guard let p = primaries.first else { return nil }
                i = p
            }
            return i < pools.count ? (i, pools[i]) : nil
        }
    }

    private func pool(at i: Int) -> RedisPool? { lock.withLock { i < pools.count ? pools[i] : nil } }
    private func nodeAt(_ i: Int) -> Node { lock.withLock { nodes[i] } }
    private func knownIndex(_ n: Node) -> Int? { lock.withLock { known.contains(n) ? index[n] : nil } }

    /// Records a `MOVED` answer when the map knows the node; false when it does not.
    private func learnOwner(slot: Int, node: Node) -> Bool {
        lock.withLock {
            guard known.contains(node), let i = index[node] else { return false }
            owners[slot] = UInt16(i)
            if !primaries.contains(i) { primaries.append(i) }
            return true
        }
    }

    /// The index of `n`, adding it and its pool (lock held).
    private func intern(_ n: Node) -> Int {
        if let i = index[n] { return i }
        // TLS, credentials and timeouts carry over to every node.
        nodes.append(n)
        pools.append(RedisPool(nodeConfig: config.aimed(at: n.host, port: n.port)))
        index[n] = nodes.count - 1
        return nodes.count - 1
    }

    private func refreshIfDue() throws(BitsecError) {
        let due = lock.withLock { loadedAtMs == 0 || Clock.monotonicMillis() - loadedAtMs >= Int64(settings.refreshMs) }
        if due { try refresh(periodic: true) }
    }

    /// A refresh soon: the next call that finds the map due loads it.
    private func requestRefresh() { lock.withLock { loadedAtMs = min(loadedAtMs, 1) } }

    /// Loads the slot map from the first node that answers. One refresh at a time; others
    /// keep routing by the current map. Refreshes asked for by errors are spaced by
    /// `minRefreshGapMs`. Throws only when no map was ever loaded and no node answers.
    func refresh(periodic: Bool = false) throws(BitsecError) {
        let candidates: [(Node, RedisPool)]? = lock.withLock {
            let now = Clock.monotonicMillis()
            if refreshing { return nil }
            if loadedAtMs != 0 && now - lastAttemptMs < Self.minRefreshGapMs { return nil }
            if periodic && loadedAtMs > 1 && now - loadedAtMs < Int64(settings.refreshMs) { return nil }
            refreshing = true
            lastAttemptMs = now
            var order: [Int] = []
            if !primaries.isEmpty {
                rotation &+= 1
                for k in 0..<primaries.count { order.append(primaries[(k + rotation) % primaries.count]) }
            }
            for s in settings.seeds { let i = intern(s); if !order.contains(i) { order.append(i) } }
            for n in known { let i = intern(n); if !order.contains(i) { order.append(i) } }
            return order.map { (nodes[$0], pools[$0]) }
        }
        guard let candidates else {
            // Another thread is loading the map. Without any map there is nothing to route by:
            // wait for that load (bounded by the time it may take) rather than fail as if
            // Redis were down.
            let deadline = Clock.monotonicMillis() + Int64(config.connectTimeoutMs + config.commandTimeoutMs) * Int64(max(1, settings.seeds.count))
            let loaded = lock.withLock { () -> Bool in
                while loadedAtMs == 0 && refreshing && Clock.monotonicMillis() < deadline {
                    lock.wait(untilMonotonicMillis: deadline)
                }
                return loadedAtMs != 0
            }
            if !loaded { throw .backend("redis \(config.endpointText): the slot map is being loaded") }
            return
        }
        var lastError = "no node answered"
        var loaded = false
        for (node, pool) in candidates {
            do {
                let r = try pool.command([Array("CLUSTER".utf8), Array("SLOTS".utf8)])
                guard let entries = r.array else {
                    lastError = "\(node.text): CLUSTER SLOTS: \(r.errorMessage ?? "unexpected reply")"
                    continue
                }
                if try install(entries, askedOf: node) { loaded = true; break }
                lastError = "\(node.text): CLUSTER SLOTS listed no slot"
            } catch {
                lastError = error.detail
            }
        }
        let never = lock.withLock { () -> Bool in
            refreshing = false
            lock.broadcast()
            if !loaded && loadedAtMs > 1 { loadedAtMs = max(1, Clock.monotonicMillis() - Int64(settings.refreshMs) + Self.minRefreshGapMs) }
            return loadedAtMs == 0
        }
        if !loaded && never { throw .backend("redis \(config.endpointText): cannot load the slot map (\(lastError))") }
    }

    /// Installs a `CLUSTER SLOTS` reply; false when it covers no slot.
    private func install(_ entries: [RedisReply], askedOf asked: Node) throws(BitsecError) -> Bool {
        func node(_ r: RedisReply) -> Node? {
            guard let a = r.array, a.count >= 2, let host = a[0].text, let port = a[1].integer, (1...65535).contains(port) else { return nil }
            if host == "?" { return nil }
            return Node(host: host.isEmpty ? asked.host : host, port: Int32(port))
        }
        var parsed: [(ClosedRange<Int>, Node, [Node])] = []
        for e in entries {
            guard let a = e.array, a.count >= 3, let lo = a[0].integer, let hi = a[1].integer,
                  lo >= 0, lo <= hi, hi < Int64(ClusterSlot.count), let primary = node(a[2]) else { continue }
            parsed.append((Int(lo)...Int(hi), primary, a.dropFirst(3).compactMap(node)))
        }
        guard !parsed.isEmpty else { return false }
        lock.withLock {
            var fresh = [UInt16](repeating: Self.noOwner, count: ClusterSlot.count)
            var seen: Set<Node> = []
            var prim: [Int] = []
            for (range, p, replicas) in parsed {
                let i = intern(p)
                if !prim.contains(i) { prim.append(i) }
                seen.insert(p)
                for r in replicas { _ = intern(r); seen.insert(r) }
                for s in range { fresh[s] = UInt16(truncatingIfNeeded: i) }
            }
            owners = fresh
            known = seen
            primaries = prim
            loadedAtMs = max(2, Clock.monotonicMillis())
            refreshCount += 1
        }
        return true
    }

    // MARK: - Introspection and shutdown

    /// The primary serving `slot` in the current map (tests, describe).
    public func primary(forSlot slot: Int) -> Node? {
        guard (0..<ClusterSlot.count).contains(slot) else { return nil }
        return owner(of: slot).map { nodeAt($0) }
    }

    /// Loads the map now (tests, runtime open).
    public func loadMap() throws(BitsecError) { try refresh() }

    /// Map loads, redirects and retries (all kinds), and `ASK` redirects among them, so far
    /// (metrics, tests).
    public var counters: (refreshes: Int64, redirects: Int64, asks: Int64) { lock.withLock { (refreshCount, redirectCount, askCount) } }

    /// The primaries of the current map.
    public var primaryNodes: [Node] { lock.withLock { primaries.map { nodes[$0] } } }

    /// `PING` every primary; the slowest round trip in microseconds.
    public func ping() throws(BitsecError) -> Int64 {
        try refreshIfDue()
        let ps = lock.withLock { primaries.map { pools[$0] } }
        guard !ps.isEmpty else { throw .backend("redis \(config.endpointText): no node is known") }
        var worst: Int64 = 0
        for p in ps { worst = max(worst, try p.ping()) }
        return worst
    }

    public func shutdown() { for p in lock.withLock({ pools }) { p.shutdown() } }

    // MARK: - fork()

    // Driven by the facade `RedisPool` (the node pools are not registered on their own):
    // the router's lock, then each node pool's lock, so the child inherits a consistent map.
    func prepareFork() {
        lock.lock()
        for p in pools { p.prepareFork() }
    }

    func afterForkInParent() {
        var i = pools.count
        while i > 0 { i -= 1; pools[i].afterForkInParent() }
        lock.unlock()
    }

    /// The child keeps the slot map (the addresses are still right) but none of the
    /// parent's connections, and a map load the parent had under way is not waited for.
    func afterForkInChild() {
        // By index: no new witness tables in the child (ForkSafety.child).
        var i = pools.count
        while i > 0 { i -= 1; pools[i].afterForkInChild() }
        refreshing = false
        lock.unlock()
    }

    public var openConnections: Int { lock.withLock { pools }.reduce(0) { $0 + $1.openConnections } }
}
