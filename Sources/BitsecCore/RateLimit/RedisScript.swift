internal import COpenSSL
internal import Synchronization

/// A Lua script run with `EVALSHA`: one round trip per call. The SHA-1 is computed here
/// (OpenSSL) so the first call needs no `SCRIPT LOAD` round trip when the server already
/// has the script; on `NOSCRIPT` (a restarted server, `SCRIPT FLUSH`, a failover) the call is
/// retried once, transparently, with `EVAL` and the source on the same connection, which runs
/// the script and loads it into the server's cache again for the next `EVALSHA`s.
public struct RedisScript: Sendable {
    public let source: [UInt8]
    /// Lowercase hex SHA-1 of `source`, as Redis names scripts.
    public let sha: [UInt8]

    public init(_ text: String) {
        source = Array(text.utf8)
        var md = [UInt8](repeating: 0, count: 20)
        var n: UInt32 = 0
        let ok = source.withUnsafeBytes { s in
            md.withUnsafeMutableBytes { m in
                EVP_Digest(s.baseAddress, s.count, m.baseAddress?.assumingMemoryBound(to: UInt8.self), &n, EVP_sha1(), nil)
            }
        }
        // SHA-1 of a static string cannot fail; if it ever did, "0" never matches a script
        // and every call takes the NOSCRIPT path (EVAL with the source).
        sha = ok == 1 ? Array(Hex.encode(md).utf8) : Array("0".utf8)
    }

    private static let evalsha = Array("EVALSHA".utf8)
    private static let eval = Array("EVAL".utf8)

    /// Runs the script on a pooled connection: `body` appends the RESP encoding of the
    /// `numKeys` keys then the arguments, `argCount` in all (it may be called twice: for
    /// `EVALSHA`, then for `EVAL` after `NOSCRIPT`). A Redis error reply (other than NOSCRIPT)
    /// is returned as `.error`; I/O failures and timeouts throw `backendUnavailable`.
    @inline(__always)
    public func run(_ pool: RedisPool, numKeys: Int, argCount: Int, capacity: Int,
                    body: (inout RESPEncoder) -> Void) throws(BitsecError) -> RedisReply {
        var cmd = RESPEncoder(count: 3 + argCount, capacity: capacity + 96)
        cmd.bulk(Self.evalsha)
        cmd.bulk(sha)
        cmd.bulk(int: Int64(numKeys))
        body(&cmd)
        /// The same call as `EVAL` with the script's source (after `NOSCRIPT`).
        func evalCommand() -> [UInt8] {
            var again = RESPEncoder(count: 3 + argCount, capacity: source.count + capacity + 96)
            again.bulk(Self.eval)
            again.bulk(source)
            again.bulk(int: Int64(numKeys))
            body(&again)
            return again.bytes
        }
        if let cluster = pool.cluster {
            // Two routed commands, not one connection: after an ASK redirect the ASKING flag
            // covers one command, so the EVAL fallback must be routed (and flagged) again.
            let slot = ClusterSlot.of(resp: cmd.bytes)
            let r = try cluster.execute(slot: slot) { (c) throws(BitsecError) -> RedisReply in try c.command(resp: cmd.bytes) }
            guard case .error(let e) = r, e.hasPrefix("NOSCRIPT") else { return r }
            let again = evalCommand()
            return try cluster.execute(slot: slot) { (c) throws(BitsecError) -> RedisReply in try c.command(resp: again) }
        }
        return try pool.withConnection { (c) throws(BitsecError) -> RedisReply in
            let r = try c.command(resp: cmd.bytes)
            guard case .error(let e) = r, e.hasPrefix("NOSCRIPT") else { return r }
            // EVAL with the source runs the script and caches it again in one step, so a
            // SCRIPT FLUSH racing with this retry cannot make it fail (SCRIPT LOAD then
            // EVALSHA could).
            return try c.command(resp: evalCommand())
        }
    }

    /// As above, with the keys and arguments as byte arrays.
    public func run(_ pool: RedisPool, keys: [[UInt8]], args: [[UInt8]]) throws(BitsecError) -> RedisReply {
        try run(pool, numKeys: keys.count, argCount: keys.count + args.count, capacity: 128) { e in
            for k in keys { e.bulk(k) }
            for a in args { e.bulk(a) }
        }
    }
}

/// Stops calling Redis for `retryMs` after a failure, so that a server that accepts
/// connections but does not answer costs one command timeout per `retryMs`, not one per
/// call. The pool's own backoff covers refused connections; this covers timeouts. The first
/// call after `retryMs` tries Redis again: recovery is automatic.
public final class OutageBreaker: Sendable {
    private let openUntil = Atomic<Int64>(0)
    public let retryMs: Int64

    public init(retryMs: Int64) { self.retryMs = retryMs }

    /// True while calls should skip Redis.
    @inline(__always)
    public var isOpen: Bool {
        let until = openUntil.load(ordering: .relaxed)
        return until != 0 && Clock.monotonicMillis() < until
    }

    /// Records a failure; returns true when this opened the breaker (was closed before).
    @discardableResult
    public func tripped() -> Bool {
        guard retryMs > 0 else { return openUntil.exchange(1, ordering: .relaxed) == 0 }
        let old = openUntil.exchange(Clock.monotonicMillis() &+ retryMs, ordering: .relaxed)
        return old == 0
    }

    /// Records a success; returns true when Redis just came back (the breaker was open).
    @inline(__always)
    @discardableResult
    public func succeeded() -> Bool {
        guard openUntil.load(ordering: .relaxed) != 0 else { return false }
        return openUntil.exchange(0, ordering: .relaxed) != 0
    }
}
