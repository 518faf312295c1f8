/// SipHash-2-4 with a 128-bit output (Aumasson and Bernstein), the keyed hash of the keys of a
/// table shared between processes.
///
/// Why not Swift's `Hasher`: it is seeded randomly per process, so two processes would place
/// one key differently. Why not a MAC through OpenSSL's EVP: a shared table hashes on every
/// operation, and an EVP MAC context costs more than the whole in-process operation. SipHash
/// is a PRF designed for exactly this (hash-flooding resistance with a secret key); keyed by the
/// region's 128-bit secret, a client cannot predict where its keys land or make two keys
/// collide. The 128-bit output is the stored identity of a key: a table never stores the key's
/// text, and two distinct keys share an identity with probability about 2^-128 per pair.
/// Checked against the reference vectors (tests/vectors/siphash).
public enum SipHash24 {
    @inline(__always)
    private static func rotl(_ x: UInt64, _ b: UInt64) -> UInt64 { (x << b) | (x >> (64 &- b)) }

    @inline(__always)
    private static func rounds(_ n: Int, _ v0: inout UInt64, _ v1: inout UInt64, _ v2: inout UInt64, _ v3: inout UInt64) {
        for _ in 0..<n {
            v0 &+= v1; v1 = rotl(v1, 13); v1 ^= v0; v0 = rotl(v0, 32)
            v2 &+= v3; v3 = rotl(v3, 16); v3 ^= v2
            v0 &+= v3; v3 = rotl(v3, 21); v3 ^= v0
            v2 &+= v1; v1 = rotl(v1, 17); v1 ^= v2; v2 = rotl(v2, 32)
        }
    }

    /// The 128-bit SipHash-2-4 of `bytes` under the key (k0, k1) (the key's bytes 0-7 and 8-15,
    /// little-endian). The result's bytes are `lo` then `hi`, each little-endian, as in the
    /// reference implementation's output.
    public static func hash128(_ bytes: UnsafeRawBufferPointer, k0: UInt64, k1: UInt64) -> (lo: UInt64, hi: UInt64) {
        var v0: UInt64 = 0x736f6d6570736575 ^ k0
        var v1: UInt64 = 0x646f72616e646f6d ^ k1
        var v2: UInt64 = 0x6c7967656e657261 ^ k0
        var v3: UInt64 = 0x7465646279746573 ^ k1
        v1 ^= 0xee
        let n = bytes.count
        let whole = n & ~7
        var i = 0
        while i < whole {
            let m = UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: i, as: UInt64.self))
            v3 ^= m
            rounds(2, &v0, &v1, &v2, &v3)
            v0 ^= m
            i &+= 8
        }
        var b = UInt64(truncatingIfNeeded: n) << 56
        var shift: UInt64 = 0
        while i < n {
            b |= UInt64(bytes[i]) << shift
            shift &+= 8
            i &+= 1
        }
        v3 ^= b
        rounds(2, &v0, &v1, &v2, &v3)
        v0 ^= b
        v2 ^= 0xee
        rounds(4, &v0, &v1, &v2, &v3)
        let lo = v0 ^ v1 ^ v2 ^ v3
        v1 ^= 0xdd
        rounds(4, &v0, &v1, &v2, &v3)
        let hi = v0 ^ v1 ^ v2 ^ v3
        return (lo, hi)
    }

    /// The 128-bit SipHash-2-4 of a string's UTF-8 bytes.
    @inline(__always)
    public static func hash128(_ s: String, k0: UInt64, k1: UInt64) -> (lo: UInt64, hi: UInt64) {
        if let r = s.utf8.withContiguousStorageIfAvailable({ hash128(UnsafeRawBufferPointer($0), k0: k0, k1: k1) }) {
            return r
        }
        var copy = s
        copy.makeContiguousUTF8()
        return copy.utf8.withContiguousStorageIfAvailable({ hash128(UnsafeRawBufferPointer($0), k0: k0, k1: k1) })
            ?? Array(s.utf8).withUnsafeBytes { hash128($0, k0: k0, k1: k1) }
    }
}
