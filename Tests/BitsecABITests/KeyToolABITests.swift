// Signing-key tooling through the exported C ABI: bitsec_token_key_generate and
// bitsec_token_key_public_jwk, checked end to end (a generated key signs, its public JWK
// verifies in another runtime).
import Testing
import Glibc
import Bitsec

private let E_MALFORMED = BitsecABI.BITSEC_E_MALFORMED

private func output(_ body: (UnsafeMutablePointer<CChar>?, UInt, UnsafeMutablePointer<UInt>?) -> Int32) -> (Int32, String) {
    var buf = [CChar](repeating: 0, count: 8192)
    var n: UInt = 0
    let rc = buf.withUnsafeMutableBufferPointer { body($0.baseAddress, 8192, &n) }
    guard rc == OK else { return (rc, "") }
    return (rc, String(decoding: buf.prefix(Int(n)).map { UInt8(bitPattern: $0) }, as: UTF8.self))
}

private func generate(_ type: String) -> (Int32, String) {
    output { bitsec_token_key_generate(type, UInt(type.utf8.count), $0, $1, $2) }
}

private func jwk(_ pem: String) -> (Int32, String) {
    output { bitsec_token_key_public_jwk(pem, UInt(pem.utf8.count), $0, $1, $2) }
}

private func jsonString(_ s: String) -> String {
    "\"" + s.replacingAll("\\", "\\\\").replacingAll("\"", "\\\"").replacingAll("\n", "\\n") + "\""
}

extension String {
    fileprivate func replacingAll(_ a: String, _ b: String) -> String {
        split(separator: a, omittingEmptySubsequences: false).joined(separator: b)
    }
}

@Suite struct KeyToolABITests {
    @Test(arguments: [("P-256", "ES256", #""kty":"EC""#), ("P-384", "ES384", #""kty":"EC""#), ("P-521", "ES512", #""kty":"EC""#),
                      ("Ed25519", "EdDSA", #""kty":"OKP""#), ("RSA-2048", "RS256", #""kty":"RSA""#)])
    func generatedKeySignsAndItsPublicJWKVerifies(_ type: String, _ alg: String, _ kty: String) throws {
        let (rc, pem) = generate(type)
        #expect(rc == OK, "\(lastError())")
        #expect(pem.hasPrefix("-----BEGIN PRIVATE KEY-----\n"))
        #expect(pem.hasSuffix("-----END PRIVATE KEY-----\n"))
        let (jrc, pub) = jwk(pem)
        #expect(jrc == OK, "\(lastError())")
        #expect(pub.hasPrefix("{") && pub.contains(kty))
        #expect(!pub.contains(#""d""#) && !pub.contains(#""p""#), "private member in \(pub)")
        #expect(!pub.contains(" "), "not canonical: \(pub)")

        let (src, signerRT) = open(#"{"allow_inline_secrets": true, "tokens": {"keys": [{"kid": "k1", "alg": "\#(alg)", "pem": {"value": \#(jsonString(pem))}}]}}"#)
        #expect(src == OK, "\(lastError())")
        let signer = try #require(signerRT)
        defer { bitsec_runtime_close(signer) }
        let claims = #"{"sub":"u1","exp":4102444800}"#
        let (trc, token) = output { bitsec_token_sign(signer, claims, UInt(claims.utf8.count), nil, 0, $0, $1, $2) }
        #expect(trc == OK, "\(lastError())")

        let (vrc, verifierRT) = open(#"{"tokens": {"keys": [{"kid": "k1", "alg": "\#(alg)", "jwk": \#(pub)}]}}"#)
        #expect(vrc == OK, "\(lastError())")
        let verifier = try #require(verifierRT)
        defer { bitsec_runtime_close(verifier) }
        var reason: Int32 = -1
        var n: UInt = 0
        #expect(bitsec_verify_token(verifier, token, UInt(token.utf8.count), 0, &reason, nil, 0, &n) == OK, "\(lastError())")
        #expect(reason == 0, "reason \(reason)")
    }

    @Test func twoKeysDiffer() {
        let a = generate("Ed25519").1, b = generate("Ed25519").1
        #expect(!a.isEmpty && a != b)
        #expect(jwk(a).1 != jwk(b).1)
    }

    @Test func publicJWKOfThePublicKeyEqualsThatOfThePrivateKey() {
        let pem = generate("P-256").1
        let pubPEM = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAYSW5x0ncyzmesHYsxOwpYqYiLzHN6FsKkherCAndois=\n-----END PUBLIC KEY-----\n"
        let (rc, j) = jwk(pubPEM)
        #expect(rc == OK, "\(lastError())")
        #expect(j == #"{"crv":"Ed25519","kty":"OKP","x":"YSW5x0ncyzmesHYsxOwpYqYiLzHN6FsKkherCAndois"}"#)
        #expect(jwk(pem).0 == OK)
    }

    @Test func refusals() {
        #expect(generate("RSA-1024").0 == E_INVALID)
        #expect(generate("ed25519x").0 == E_INVALID)
        #expect(generate("").0 == E_INVALID)
        #expect(generate(String(repeating: "P", count: 17)).0 == E_TOO_LARGE)
        #expect(jwk("not a key").0 == E_MALFORMED)
        #expect(jwk("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n").0 == E_MALFORMED)
        let encrypted = "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n"
        #expect(jwk(encrypted).0 == E_MALFORMED)
        #expect(!lastError().contains("AAAA"))
        var n: UInt = 0
        #expect(bitsec_token_key_generate(nil, 5, nil, 0, &n) == E_INVALID)
        #expect(bitsec_token_key_generate("P-256", 5, nil, 0, nil) == E_INVALID)
        #expect(bitsec_token_key_public_jwk(nil, 0, nil, 0, &n) != OK)
    }
}
