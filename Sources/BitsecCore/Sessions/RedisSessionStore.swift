/// Sessions in Redis, shared by every instance. A user's sessions share one hash tag (the
/// identifier's tag), so every operation is one script on one cluster slot:
/// - `<key_prefix>session:{<tag>}:<hash>`: a hash (u user, t tenant, c created, s last seen,
///   e absolute expiry, i idle timeout, k binding kind, b binding digest in hex), with a TTL
///   until the session's end (renewed when touched);
/// - `<key_prefix>session:{<tag>}:u`: a sorted set of the tag's session hashes by creation
///   time (the per-user index), TTL the absolute timeout.
public final class RedisSessionStore: SessionStore {
    let pool: RedisPool
    let prefix: String
    let absoluteTimeout: Int64
    public var backendName: String { "redis" }

    public init(pool: RedisPool, absoluteTimeout: Int64) {
        self.pool = pool
        self.prefix = pool.config.keyPrefix + "session:{"
        self.absoluteTimeout = absoluteTimeout
    }

    /// The checks shared by validate and rotate: sets `code` (0 valid) and, when valid,
    /// touches the idle timer. KEYS[1] the session, KEYS[2] the index; ARGV[1] now,
    /// ARGV[2] the address digest, ARGV[3] the user-agent digest, ARGV[4] the hash.
    static let checkLua = """
        local f = redis.call('HMGET', KEYS[1], 'u', 't', 'c', 's', 'e', 'i', 'k', 'b')
        if not f[1] then return {1} end
        local now = tonumber(ARGV[1])
        local s = tonumber(f[4]); local e = tonumber(f[5]); local i = tonumber(f[6])
        local code = 0
        if now >= e then code = 2
        elseif i > 0 and now >= s + i then code = 3
        elseif (f[7] == '1' and f[8] ~= ARGV[2]) or (f[7] == '2' and f[8] ~= ARGV[3]) then code = 4 end
        if code ~= 0 then
          redis.call('DEL', KEYS[1])
          redis.call('ZREM', KEYS[2], ARGV[4])
          return {code, f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8]}
        end
        if now > s then s = now end
        local untilT = e
        if i > 0 and s + i < e then untilT = s + i end
        local ttl = untilT - now
        if ttl < 1 then ttl = 1 end

        """

    static let validateScript = RedisScript(checkLua + """
        if s > tonumber(f[4]) then
          redis.call('HSET', KEYS[1], 's', s)
          redis.call('EXPIRE', KEYS[1], ttl)
        end
        return {0, f[1], f[2], f[3], tostring(s), f[5], f[6], f[7], f[8]}
        """)

    /// KEYS[3] the new session; ARGV[5] the new hash.
    static let rotateScript = RedisScript(checkLua + """
        redis.call('DEL', KEYS[1])
        redis.call('ZREM', KEYS[2], ARGV[4])
        redis.call('HSET', KEYS[3], 'u', f[1], 't', f[2], 'c', f[3], 's', s, 'e', f[5], 'i', f[6], 'k', f[7], 'b', f[8])
        redis.call('EXPIRE', KEYS[3], ttl)
        redis.call('ZADD', KEYS[2], f[3], ARGV[5])
        return {0, f[1], f[2], f[3], tostring(s), f[5], f[6], f[7], f[8]}
        """)

    /// KEYS[1] the session, KEYS[2] the index. ARGV: 1 user, 2 tenant, 3 now (created),
    /// 4 expires, 5 idle, 6 kind, 7 binding, 8 ttl, 9 max per user, 10 key base, 11 hash,
    /// 12 index ttl.
    static let createScript = RedisScript("""
        local now = tonumber(ARGV[3])
        local members = redis.call('ZRANGE', KEYS[2], 0, -1)
        local mine = {}
        for _, m in ipairs(members) do
          local g = redis.call('HMGET', ARGV[10] .. m, 'u', 't', 's', 'e', 'i')
          local dead = not g[1]
          if not dead then
            local i = tonumber(g[5])
            dead = tonumber(g[4]) <= now or (i > 0 and tonumber(g[3]) + i <= now)
          end
          if dead then
            redis.call('DEL', ARGV[10] .. m)
            redis.call('ZREM', KEYS[2], m)
          elseif g[1] == ARGV[1] and g[2] == ARGV[2] then
            mine[#mine + 1] = m
          end
        end
        local ended = {}
        local max = tonumber(ARGV[9])
        local j = 1
        while #mine - j + 1 >= max do
          redis.call('DEL', ARGV[10] .. mine[j])
          redis.call('ZREM', KEYS[2], mine[j])
          ended[#ended + 1] = mine[j]
          j = j + 1
        end
        redis.call('HSET', KEYS[1], 'u', ARGV[1], 't', ARGV[2], 'c', ARGV[3], 's', ARGV[3], 'e', ARGV[4], 'i', ARGV[5], 'k', ARGV[6], 'b', ARGV[7])
        redis.call('EXPIRE', KEYS[1], ARGV[8])
        redis.call('ZADD', KEYS[2], ARGV[3], ARGV[11])
        if redis.call('TTL', KEYS[2]) < tonumber(ARGV[12]) then redis.call('EXPIRE', KEYS[2], ARGV[12]) end
        return ended
        """)

    /// KEYS[1] the session, KEYS[2] the index; ARGV[1] the hash.
    static let revokeScript = RedisScript("""
        local f = redis.call('HMGET', KEYS[1], 'u', 't', 'c', 's', 'e', 'i', 'k', 'b')
        if not f[1] then return {} end
        redis.call('DEL', KEYS[1])
        redis.call('ZREM', KEYS[2], ARGV[1])
        return f
        """)

    /// KEYS[1] the index; ARGV 1 user, 2 tenant, 3 key base, 4 now, 5 "1" to remove.
    static let userScript = RedisScript("""
        local now = tonumber(ARGV[4])
        local out = {}
        for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
          local g = redis.call('HMGET', ARGV[3] .. m, 'u', 't', 'c', 's', 'e', 'i', 'k', 'b')
          if not g[1] then
            redis.call('ZREM', KEYS[1], m)
          elseif g[1] == ARGV[1] and g[2] == ARGV[2] then
            if ARGV[5] == '1' then
              redis.call('DEL', ARGV[3] .. m)
              redis.call('ZREM', KEYS[1], m)
              out[#out + 1] = m
            else
              local i = tonumber(g[6])
              if tonumber(g[5]) > now and (i == 0 or tonumber(g[4]) + i > now) then
                out[#out + 1] = m
                for _, v in ipairs(g) do out[#out + 1] = v end
              end
            end
          end
        end
        return out
        """)

    func base(_ tag: String) -> String { prefix + tag + "}:" }
    func key(_ id: String) -> [UInt8]? {
        guard let p = SessionToken.parts(ofID: id) else { return nil }
        return Array((base(p.tag) + p.hash).utf8)
    }
    func indexKey(_ tag: String) -> [UInt8] { Array((base(tag) + "u").utf8) }
    static func b(_ s: String) -> [UInt8] { Array(s.utf8) }
    static func b(_ v: Int64) -> [UInt8] { Array(String(v).utf8) }

    private func run(_ s: RedisScript, keys: [[UInt8]], args: [[UInt8]], what: String) throws(BitsecError) -> RedisReply {
        let r = try s.run(pool, keys: keys, args: args)
        if let e = r.errorMessage { throw .backend("redis session \(what) script: \(e)") }
        return r
    }

    /// A record from the eight fields u, t, c, s, e, i, k, b.
    static func record(_ f: ArraySlice<RedisReply>) -> SessionRecord? {
        guard f.count == 8 else { return nil }
        let v = Array(f)
        guard let u = v[0].bytes, let t = v[1].bytes, let c = v[2].text.flatMap({ Int64($0) }), let s = v[3].text.flatMap({ Int64($0) }),
              let e = v[4].text.flatMap({ Int64($0) }), let i = v[5].text.flatMap({ Int64($0) }),
              let k = v[6].text.flatMap({ UInt8($0) }), let bh = v[7].text else { return nil }
        return SessionRecord(user: u, tenant: t, created: c, lastSeen: s, expires: e, idle: i, binding: Array(bh.utf8), kind: k)
    }

    public func create(id: String, record r: SessionRecord, maxPerUser: Int, now: Int64) throws(BitsecError) -> [String] {
        guard let k = key(id), let p = SessionToken.parts(ofID: id) else { throw .internalError("malformed session identifier") }
        let ttl = max(r.validUntil &- now, 1)
        let reply = try run(Self.createScript, keys: [k, indexKey(p.tag)], args: [
            r.user, r.tenant, Self.b(now), Self.b(r.expires), Self.b(r.idle), Self.b(Int64(r.kind)), Array(Hex.encode(r.binding).utf8),
            Self.b(ttl), Self.b(Int64(maxPerUser)), Self.b(base(p.tag)), Self.b(p.hash), Self.b(absoluteTimeout + 60),
        ], what: "create")
        guard let a = reply.array else { throw .backend("redis session create script: unexpected reply") }
        return a.compactMap { $0.text.map { $0 + "." + p.tag } }
    }

    private func check(_ reply: RedisReply) throws(BitsecError) -> SessionCheck {
        guard let a = reply.array, let code = a.first?.integer, let reason = SessionReason(rawValue: Int32(truncatingIfNeeded: code)) else {
            throw .backend("redis session script: unexpected reply")
        }
        let r = a.count == 9 ? Self.record(a[1...]) : nil
        if reason == .valid {
            guard let r else { throw .backend("redis session script: unexpected reply") }
            return .valid(r)
        }
        return .refused(reason, r)
    }

    private func digests(_ c: SessionClient) -> [[UInt8]] {
        [Array(Hex.encode(c.digest(kind: 1)).utf8), Array(Hex.encode(c.digest(kind: 2)).utf8)]
    }

    public func validate(id: String, client: SessionClient, now: Int64) throws(BitsecError) -> SessionCheck {
        guard let k = key(id), let p = SessionToken.parts(ofID: id) else { return .refused(.unknown, nil) }
        let d = digests(client)
        return try check(try run(Self.validateScript, keys: [k, indexKey(p.tag)], args: [Self.b(now), d[0], d[1], Self.b(p.hash)], what: "validate"))
    }

    public func rotate(id: String, newID: String, client: SessionClient, now: Int64) throws(BitsecError) -> SessionCheck {
        guard let k = key(id), let p = SessionToken.parts(ofID: id), let nk = key(newID), let np = SessionToken.parts(ofID: newID) else {
            return .refused(.unknown, nil)
        }
        let d = digests(client)
        return try check(try run(Self.rotateScript, keys: [k, indexKey(p.tag), nk],
                                 args: [Self.b(now), d[0], d[1], Self.b(p.hash), Self.b(np.hash)], what: "rotate"))
    }

    public func revoke(id: String, now: Int64) throws(BitsecError) -> SessionRecord? {
        guard let k = key(id), let p = SessionToken.parts(ofID: id) else { return nil }
        let reply = try run(Self.revokeScript, keys: [k, indexKey(p.tag)], args: [Self.b(p.hash)], what: "revoke")
        guard let a = reply.array else { throw .backend("redis session revoke script: unexpected reply") }
        return a.isEmpty ? nil : Self.record(a[...])
    }

    public func revokeUser(user: [UInt8], tenant: [UInt8], now: Int64) throws(BitsecError) -> [String] {
        let tag = SessionToken.tag(user: user, tenant: tenant)
        let reply = try run(Self.userScript, keys: [indexKey(tag)], args: [user, tenant, Self.b(base(tag)), Self.b(now), [UInt8(ascii: "1")]],
                            what: "revoke_user")
        guard let a = reply.array else { throw .backend("redis session revoke_user script: unexpected reply") }
        return a.compactMap { $0.text.map { $0 + "." + tag } }
    }

    public func list(user: [UInt8], tenant: [UInt8], now: Int64) throws(BitsecError) -> [(id: String, record: SessionRecord)] {
        let tag = SessionToken.tag(user: user, tenant: tenant)
        let reply = try run(Self.userScript, keys: [indexKey(tag)], args: [user, tenant, Self.b(base(tag)), Self.b(now), [UInt8(ascii: "0")]],
                            what: "list")
        guard let a = reply.array, a.count % 9 == 0 else { throw .backend("redis session list script: unexpected reply") }
        var out: [(id: String, record: SessionRecord)] = []
        var i = 0
        while i < a.count {
            if let h = a[i].text, let r = Self.record(a[(i + 1)..<(i + 9)]) { out.append((h + "." + tag, r)) }
            i += 9
        }
        return out
    }
}
