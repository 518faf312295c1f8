import Testing
import BitsecCore

/// The verified-token cache compares a presented token with its cached copy eight bytes at a
/// time: the answer must be CRYPTO_memcmp's for every length (the word loop and the byte tail),
/// at every alignment (a token from the C ABI can start anywhere) and for a difference at
/// every position.
@Suite struct TokenCacheCompareTests {
    static func same(_ a: [UInt8], _ oa: Int, _ b: [UInt8], _ ob: Int, _ n: Int) -> (Bool, Bool) {
        a.withUnsafeBytes { x in
            b.withUnsafeBytes { y in
                let xs = UnsafeRawBufferPointer(rebasing: x[oa..<(oa + n)])
                let ys = UnsafeRawBufferPointer(rebasing: y[ob..<(ob + n)])
                return (VerifiedTokenCache.sameBytesForTesting(xs, ys), OpenSSL.constantTimeEqual(xs, ys))
            }
        }
    }

    @Test func wordwiseCompareAgreesWithCryptoMemcmpAtEveryLengthAlignmentAndPosition() throws {
        var rng = SystemRandomNumberGenerator()
        for n in 0...75 {
            for (oa, ob) in [(0, 0), (1, 0), (0, 3), (5, 7)] {
                let base = (0..<(n + 8)).map { _ in UInt8.random(in: 0...255, using: &rng) }
                var a = [UInt8](repeating: 0, count: n + 8)
                var b = [UInt8](repeating: 0, count: n + 8)
                a.replaceSubrange(oa..<(oa + n), with: base[0..<n])
                b.replaceSubrange(ob..<(ob + n), with: base[0..<n])
                let equal = Self.same(a, oa, b, ob, n)
                #expect(equal.0 && equal.1, "length \(n), offsets \(oa) \(ob)")
                for i in 0..<n {
                    for flip: UInt8 in [0x01, 0x80, 0xFF] {
                        var c = b
                        c[ob + i] ^= flip
                        let r = Self.same(a, oa, c, ob, n)
                        #expect(!r.0 && !r.1, "length \(n), byte \(i), offsets \(oa) \(ob)")
                    }
                }
            }
            if n > 0 {  // a different length is never the same
                let a = [UInt8](repeating: 7, count: n)
                let r = a.withUnsafeBytes { x in
                    VerifiedTokenCache.sameBytesForTesting(x, UnsafeRawBufferPointer(rebasing: x[0..<(n - 1)]))
                }
                #expect(!r)
            }
        }
    }
}
