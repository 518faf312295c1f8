internal import Synchronization

/// A bounded cache of tokens whose signature verified, keyed on the whole token: a hash
/// lookup, then a constant-time comparison of the full bytes. The hash is Swift's `Hasher`
/// (SipHash-1-3, seeded per process) over a 128-bit secret drawn when the cache is made,
/// then the token: a client cannot compute which tokens collide or which entry its tokens
/// displace. At `capacity` entries an insert evicts one entry, chosen by that keyed hash
/// order (O(1)); eviction can only cost a later signature check, never accept anything, so
/// a flood of valid tokens slows the cache down but cannot fail open. Evictions are counted
/// in `stats` (`bitsec_table_evictions_total{table="token_cache"}`). It stores the parsed claims. A hit skips
/// only the signature check (and the parse): time claims, issuer, audience and revocation
/// are checked on every call. Cleared on key reload; entries also carry the key set's
/// generation, so an entry from an older set is never used.
public final class VerifiedTokenCache: Sendable {
    final class Entry: Sendable {
        let token: [UInt8]
        let claims: VerifiedClaims
        let generation: UInt64
        init(token: [UInt8], claims: VerifiedClaims, generation: UInt64) {
            self.token = token
            self.claims = claims
            self.generation = generation
        }
    }

    private let map = Mutex<[Int: Entry]>([:])
    public let capacity: Int
    private let secret: TableSecret
    /// Entries, capacity and evictions (metrics; a cache never refuses).
    public let stats: BoundedTableStats

    public init(capacity: Int) {
        self.capacity = capacity
        secret = .random()
        stats = BoundedTableStats(name: "token_cache", capacity: capacity)
    }

    @inline(__always)
    func hash(_ token: UnsafeRawBufferPointer) -> Int {
        var h = Hasher()
        h.combine(secret.k0)
        h.combine(secret.k1)
        h.combine(bytes: token)
        return h.finalize()
    }

    /// Whether `token` is cached with these claims' generation (tests): lookup by bytes.
    public func cachedClaims(_ token: [UInt8], generation: UInt64) -> VerifiedClaims? {
        token.withUnsafeBytes { lookup($0, hash: hash($0), generation: generation) }
    }

    /// Inserts as a verification does (tests: floods without signing each token).
    public func insertVerified(_ token: [UInt8], claims: VerifiedClaims, generation: UInt64) {
        token.withUnsafeBytes { insert($0, hash: hash($0), claims: claims, generation: generation) }
    }

    func lookup(_ token: UnsafeRawBufferPointer, hash: Int, generation: UInt64) -> VerifiedClaims? {
        guard let e = map.withLock({ $0[hash] }), e.generation == generation, e.token.count == token.count else { return nil }
        let same = e.token.withUnsafeBytes { Self.sameBytes($0, token) }
        return same ? e.claims : nil
    }

    /// Whether two buffers of the same length hold the same bytes, in time that depends on the
    /// length only: eight bytes at a time XOR-ed into one accumulator, no branch on the data.
    /// Here it compares a presented token with the cached copy that has the same keyed hash,
    /// on every cache hit; `CRYPTO_memcmp` (OpenSSL's, byte at a time) cost ten times as much
    /// for a 300-byte token. Signatures, MACs and codes are still compared with
    /// `CRYPTO_memcmp` (`OpenSSL.constantTimeEqual`).
    static func sameBytes(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) -> Bool {
        let n = a.count
        guard n == b.count else { return false }
        guard n > 0, let pa = a.baseAddress, let pb = b.baseAddress else { return true }
        var acc: UInt64 = 0
        var i = 0
        while i &+ 8 <= n {
            acc |= pa.loadUnaligned(fromByteOffset: i, as: UInt64.self) ^ pb.loadUnaligned(fromByteOffset: i, as: UInt64.self)
            i &+= 8
        }
        while i < n {
            acc |= UInt64(pa.load(fromByteOffset: i, as: UInt8.self) ^ pb.load(fromByteOffset: i, as: UInt8.self))
            i &+= 1
        }
        return acc == 0
    }

    /// `sameBytes` (tests: every length, alignment and differing byte against `CRYPTO_memcmp`).
    public static func sameBytesForTesting(_ a: UnsafeRawBufferPointer, _ b: UnsafeRawBufferPointer) -> Bool {
        sameBytes(a, b)
    }

    func insert(_ token: UnsafeRawBufferPointer, hash: Int, claims: VerifiedClaims, generation: UInt64) {
        let e = Entry(token: Array(token), claims: claims, generation: generation)
        let n = map.withLock { m -> Int in
            if m.count >= capacity, m[hash] == nil, let victim = m.first {
                // The keyed hash orders the entries: an entry no client can choose, in O(1).
                m.removeValue(forKey: victim.key)
                stats.evictions.wrappingAdd(1, ordering: .relaxed)
            }
            m[hash] = e
            return m.count
        }
        stats.entries.store(n, ordering: .relaxed)
    }

    public func clear() {
        map.withLock { $0.removeAll(keepingCapacity: true) }
        stats.entries.store(0, ordering: .relaxed)
    }

    public var count: Int { map.withLock { $0.count } }
}
