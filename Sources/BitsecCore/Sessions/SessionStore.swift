/// Where sessions live: this process or the host's shared region (`MemorySessionStore`), or
/// Redis (`RedisSessionStore`). One semantics in each.
public protocol SessionStore: Sendable {
    /// Stores a new session `id` for its user; when the user already holds
    /// `maxPerUser` live sessions, the oldest ones end. Returns the identifiers that ended.
    func create(id: String, record: SessionRecord, maxPerUser: Int, now: Int64) throws(BitsecError) -> [String]
    /// Checks a session and touches its idle timer; a refused session (expired, idle, binding
    /// mismatch) is removed.
    func validate(id: String, client: SessionClient, now: Int64) throws(BitsecError) -> SessionCheck
    /// As `validate`, then moves a valid session to `newID` (the old identifier stops working).
    func rotate(id: String, newID: String, client: SessionClient, now: Int64) throws(BitsecError) -> SessionCheck
    /// Removes one session; its record, nil when there was none.
    func revoke(id: String, now: Int64) throws(BitsecError) -> SessionRecord?
    /// Removes every session of a user; their identifiers.
    func revokeUser(user: [UInt8], tenant: [UInt8], now: Int64) throws(BitsecError) -> [String]
    /// The live sessions of a user, oldest first.
    func list(user: [UInt8], tenant: [UInt8], now: Int64) throws(BitsecError) -> [(id: String, record: SessionRecord)]
    var backendName: String { get }
}

/// The sessions of one user in the in-memory stores: up to `layout` (max sessions per user)
/// (hash, created, expires) entries, oldest first.
struct UserSessions: Sendable, FixedLayoutValue {
    struct Entry: Sendable, Equatable {
        var hash: [UInt8]  // the identifier's 24 hash characters
        var created: Int64
        var expires: Int64
    }
    var entries: [Entry]

    init(entries: [Entry]) { self.entries = entries }

    static func storedSize(layout: Int) -> Int { 8 + max(layout, 1) * 40 }

    init(loading p: UnsafeRawPointer, layout: Int) {
        let n = min(Int(p.loadUnaligned(fromByteOffset: 0, as: UInt32.self)), max(layout, 1))
        entries = (0..<n).map { i in
            let b = p + 8 + i * 40
            return Entry(hash: Array(UnsafeRawBufferPointer(start: b, count: 24)),
                         created: b.loadUnaligned(fromByteOffset: 24, as: Int64.self),
                         expires: b.loadUnaligned(fromByteOffset: 32, as: Int64.self))
        }
    }

    func store(to p: UnsafeMutableRawPointer, layout: Int) {
        let n = min(entries.count, max(layout, 1))
        p.storeBytes(of: UInt32(n), toByteOffset: 0, as: UInt32.self)
        for i in 0..<n {
            let b = p + 8 + i * 40
            let h = entries[i].hash
            for j in 0..<24 { b.storeBytes(of: j < h.count ? h[j] : 0, toByteOffset: j, as: UInt8.self) }
            b.storeBytes(of: entries[i].created, toByteOffset: 24, as: Int64.self)
            b.storeBytes(of: entries[i].expires, toByteOffset: 32, as: Int64.self)
        }
    }

    /// Live while any of its sessions may be (an entry's `expires` is the absolute expiry).
    func idle(_ now: Int64) -> Bool { entries.allSatisfy { $0.expires <= now } }
}

/// Sessions in two bounded `StateTable`s: the records (keyed by identifier, `max_keys`) and
/// the per-user index (keyed by tenant and user, `max_keys`, `max_sessions_per_user` entries
/// each). Both evict the least recently used live entry when full (a session then ends
/// early: its user logs in again), never refuse. A session counts only while it is in its
/// user's index, so that `revokeUser` and `list` are exact even after an index eviction.
/// Lock order: index, then record (never the reverse).
public final class MemorySessionStore: SessionStore {
    let records: StateTable<SessionRecord>
    let index: StateTable<UserSessions>
    public let store: StoreKind
    public var backendName: String { store.rawValue }

    public init(maxKeys: Int, maxPerUser: Int, placement: TablePlacement, store: StoreKind) throws(BitsecError) {
        records = try StateTable.make(placement, name: "session", maxKeys: max(maxKeys, 1),
                                      idle: { r, now in !r.isLive(at: now) }, rank: { r, _ in r.lastSeen })
        index = try StateTable.make(placement, name: "session_user", maxKeys: max(maxKeys, 1), layout: max(maxPerUser, 1),
                                    idle: { u, now in u.idle(now) }, rank: { u, _ in u.entries.map(\.created).max() ?? 0 })
        self.store = store
    }

    static func userKey(_ user: [UInt8], _ tenant: [UInt8]) -> String {
        "\(tenant.count):" + String(decoding: tenant, as: UTF8.self) + String(decoding: user, as: UTF8.self)
    }

    static func hashPart(_ id: String) -> [UInt8] { Array(id.utf8.prefix(24)) }
    static func id(_ hash: [UInt8], tag: String) -> String { String(decoding: hash, as: UTF8.self) + "." + tag }

    public func create(id: String, record: SessionRecord, maxPerUser: Int, now: Int64) -> [String] {
        let tag = SessionToken.tag(user: record.user, tenant: record.tenant)
        return index.update(Self.userKey(record.user, record.tenant), nowMs: now) { (e, makeRoom) -> [String] in
            var list = e?.entries ?? []
            if e == nil && !makeRoom() { return [] }  // cannot happen: every entry has a rank
            // Drop the entries of sessions that ended; end the oldest beyond the bound.
            list = list.filter { en in
                records.update(Self.id(en.hash, tag: tag), nowMs: now) { (r, _) -> Bool in
                    guard let cur = r else { return false }
                    if cur.isLive(at: now) { return true }
                    r = nil
                    return false
                }
            }
            var ended: [String] = []
            while list.count >= max(maxPerUser, 1) {
                let old = Self.id(list.removeFirst().hash, tag: tag)
                records.remove(old)
                ended.append(old)
            }
            records.update(id, nowMs: now) { (r, makeRoom) in
                if r != nil || makeRoom() { r = record }
            }
            list.append(UserSessions.Entry(hash: Self.hashPart(id), created: record.created, expires: record.expires))
            e = UserSessions(entries: list)
            return ended
        }
    }

    private func inIndex(_ id: String, _ r: SessionRecord, now: Int64) -> Bool {
        let h = Self.hashPart(id)
        return index.update(Self.userKey(r.user, r.tenant), nowMs: now) { (e, _) -> Bool in
            e?.entries.contains { $0.hash == h } ?? false
        }
    }

    private func unindex(_ id: String, _ r: SessionRecord, now: Int64, replacement: String? = nil) -> Bool {
        let h = Self.hashPart(id)
        return index.update(Self.userKey(r.user, r.tenant), nowMs: now) { (e, _) -> Bool in
            guard var u = e, let i = u.entries.firstIndex(where: { $0.hash == h }) else { return false }
            if let replacement {
                u.entries[i].hash = Self.hashPart(replacement)
            } else {
                u.entries.remove(at: i)
            }
            e = u.entries.isEmpty ? nil : u
            return true
        }
    }

    /// The check of a record, with the record's entry locked.
    static func check(_ r: inout SessionRecord?, client: SessionClient, now: Int64) -> SessionCheck {
        guard var cur = r else { return .refused(.unknown, nil) }
        if now >= cur.expires { r = nil; return .refused(.expired, cur) }
        if !cur.isLive(at: now) { r = nil; return .refused(.idleTimeout, cur) }
        if cur.kind != 0 && !OpenSSL.constantTimeEqual(cur.binding, client.digest(kind: cur.kind)) {
            r = nil
            return .refused(.bindingMismatch, cur)
        }
        if now > cur.lastSeen { cur.lastSeen = now; r = cur }
        return .valid(cur)
    }

    public func validate(id: String, client: SessionClient, now: Int64) -> SessionCheck {
        let c = records.update(id, nowMs: now) { (r, _) in Self.check(&r, client: client, now: now) }
        switch c {
        case .valid(let r):
            // Not in its user's index any more (the index entry was evicted): ended.
            if !inIndex(id, r, now: now) {
                records.remove(id)
                return .refused(.unknown, nil)
            }
        case .refused(_, let r?):
            _ = unindex(id, r, now: now)
        case .refused(_, nil):
            break
        }
        return c
    }

    public func rotate(id: String, newID: String, client: SessionClient, now: Int64) -> SessionCheck {
        let c = records.update(id, nowMs: now) { (r, _) -> SessionCheck in
            let c = Self.check(&r, client: client, now: now)
            if case .valid = c { r = nil }
            return c
        }
        switch c {
        case .valid(let r):
            records.update(newID, nowMs: now) { (n, makeRoom) in
                if n != nil || makeRoom() { n = r }
            }
            if !unindex(id, r, now: now, replacement: newID) {
                records.remove(newID)
                return .refused(.unknown, nil)
            }
        case .refused(_, let r?):
            _ = unindex(id, r, now: now)
        case .refused(_, nil):
            break
        }
        return c
    }

    public func revoke(id: String, now: Int64) -> SessionRecord? {
        let r = records.update(id, nowMs: now) { (r, _) -> SessionRecord? in
            let cur = r
            r = nil
            return cur
        }
        if let r { _ = unindex(id, r, now: now) }
        return r
    }

    public func revokeUser(user: [UInt8], tenant: [UInt8], now: Int64) -> [String] {
        let tag = SessionToken.tag(user: user, tenant: tenant)
        return index.update(Self.userKey(user, tenant), nowMs: now) { (e, _) -> [String] in
            let ids = (e?.entries ?? []).map { Self.id($0.hash, tag: tag) }
            for id in ids { records.remove(id) }
            e = nil
            return ids
        }
    }

    public func list(user: [UInt8], tenant: [UInt8], now: Int64) -> [(id: String, record: SessionRecord)] {
        let tag = SessionToken.tag(user: user, tenant: tenant)
        return index.update(Self.userKey(user, tenant), nowMs: now) { (e, _) -> [(id: String, record: SessionRecord)] in
            var out: [(id: String, record: SessionRecord)] = []
            for en in e?.entries ?? [] {
                let id = Self.id(en.hash, tag: tag)
                let r = records.update(id, nowMs: now) { (r, _) -> SessionRecord? in r }
                if let r, r.isLive(at: now) { out.append((id, r)) }
            }
            return out
        }
    }

    public var count: Int { records.count }
    public var tableStats: [BoundedTableStats] { [records.stats, index.stats] }
}
