import Testing
import BitsecCore

/// The verified-token cache compares a presented token with its cached copy eight bytes at a
/// time: the answer must be CRYPTO_memcmp's for every length (the word loop and the byte tail)
/// and for a difference at every position.
@Suite struct TokenCacheCompareTests {
    @Test func wordwiseCompareAgreesWithCryptoMemcmpAtEveryLengthAndPosition() throws {
        var rng = SystemRandomNumberGenerator()
        for n in 0...75 {
            let a = (0..<n).map { _ in UInt8.random(in: 0...255, using: &rng) }
            #expect(VerifiedTokenCache.sameBytesForTesting(a, a))
            #expect(OpenSSL.constantTimeEqual(a, a))
            for i in 0..<n {
                for flip: UInt8 in [0x01, 0x80, 0xFF] {
                    var b = a
                    b[i] ^= flip
                    #expect(!VerifiedTokenCache.sameBytesForTesting(a, b), "length \(n), byte \(i)")
                    #expect(VerifiedTokenCache.sameBytesForTesting(a, b) == OpenSSL.constantTimeEqual(a, b))
                }
            }
            if n > 0 {  // a different length is never the same
                #expect(!VerifiedTokenCache.sameBytesForTesting(a, Array(a.dropLast())))
            }
        }
    }
}
