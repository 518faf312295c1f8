internal import COpenSSL
internal import Synchronization

/// A bounded cache of tokens whose signature verified, keyed on the whole token: a hash
/// lookup (Swift's per-process seeded SipHash, so entries cannot be forced to collide), then
/// a constant-time comparison of the full bytes. It stores the parsed claims. A hit skips
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

    public init(capacity: Int) { self.capacity = capacity }

    @inline(__always)
    static func hash(_ token: UnsafeRawBufferPointer) -> Int {
        var h = Hasher()
        h.combine(bytes: token)
        return h.finalize()
    }

    func lookup(_ token: UnsafeRawBufferPointer, hash: Int, generation: UInt64) -> VerifiedClaims? {
        guard let e = map.withLock({ $0[hash] }), e.generation == generation, e.token.count == token.count else { return nil }
        let same = e.token.withUnsafeBytes { CRYPTO_memcmp($0.baseAddress, token.baseAddress, token.count) == 0 }
        return same ? e.claims : nil
    }

    func insert(_ token: UnsafeRawBufferPointer, hash: Int, claims: VerifiedClaims, generation: UInt64) {
        let e = Entry(token: Array(token), claims: claims, generation: generation)
        map.withLock { m in
            if m.count >= capacity, m[hash] == nil, let victim = m.first {
                // Hash order is random per process: this evicts an arbitrary entry in O(1).
                m.removeValue(forKey: victim.key)
            }
            m[hash] = e
        }
    }

    public func clear() { map.withLock { $0.removeAll(keepingCapacity: true) } }

    public var count: Int { map.withLock { $0.count } }
}
