internal import Glibc
internal import Synchronization

/// The key chosen for a JWS protected header, remembered per exact header text.
///
/// Tokens of one issuer share a handful of header segments (`{"alg":"RS256","kid":"k1",
/// "typ":"JWT"}`), so the base64url decode, the JSON parse and the key selection are done
/// once per distinct header, not per token. Only accepted headers are remembered (a flood of
/// random kids cannot fill it with rejections), it is bounded, and it is tied to the key
/// set's generation, so a reload invalidates it.
final class HeaderCache: Sendable {
    final class Entry: Sendable {
        let header: [UInt8]
        let key: TokenKey
        let generation: UInt64
        init(header: [UInt8], key: TokenKey, generation: UInt64) {
            self.header = header
            self.key = key
            self.generation = generation
        }
    }

    private let map = Mutex<[Int: Entry]>([:])
    static let capacity = 256

    @inline(__always)
    static func hash(_ b: UnsafeBufferPointer<UInt8>) -> Int {
        var h = Hasher()
        h.combine(bytes: UnsafeRawBufferPointer(b))
        return h.finalize()
    }

    func lookup(_ header: UnsafeBufferPointer<UInt8>, hash: Int, generation: UInt64) -> TokenKey? {
        guard let e = map.withLock({ $0[hash] }), e.generation == generation, e.header.count == header.count else { return nil }
        let same = e.header.withUnsafeBufferPointer { memcmp($0.baseAddress!, header.baseAddress!, header.count) == 0 }
        return same ? e.key : nil
    }

    func insert(_ header: UnsafeBufferPointer<UInt8>, hash: Int, key: TokenKey, generation: UInt64) {
        let e = Entry(header: Array(header), key: key, generation: generation)
        map.withLock { m in
            if m.count >= Self.capacity, m[hash] == nil, let victim = m.first { m.removeValue(forKey: victim.key) }
            m[hash] = e
        }
    }

    func clear() { map.withLock { $0.removeAll() } }
}
