import Testing
import Glibc
import Dispatch
import Synchronization
import BitsecCore

/// The JOSE cookbook vectors in the repository (tests/vectors/jose, RFC 7520 and RFC 8037).
enum JOSEVectors {
    static let root: String = {
        var parts = #filePath.split(separator: "/").map(String.init)
        parts.removeLast(3)  // Tests/BitsecCoreTests/TokensTests.swift
        return "/" + parts.joined(separator: "/") + "/tests/vectors/jose/"
    }()

    static func load(_ name: String) throws -> JSONValue {
        try JSONReader.parse(try readFile(root + name, limit: 1 << 20))
    }
}

private func b64(_ s: String) -> [UInt8] { Base64.decodeURLStrict(Array(s.utf8)) ?? [] }

private func tokenService(_ json: String, audit: (any AuditHook)? = nil, redis: RedisPool? = nil) throws -> TokenService {
    let v = try JSONReader.parse(json)
    let ctx = CapabilityContext(config: ConfigContext(allowInlineSecrets: true), redis: redis, audit: audit)
    return try TokenService.read(try ConfigObject(v, path: "tokens"), context: ctx)
}

private let hsSecret = "0123456789abcdef0123456789abcdef"
private let hsConfig = #"{"keys": [{"kid": "hs", "alg": "HS256", "secret": {"value": "\#(hsSecret)"}}], "issuer": "iss", "audience": "aud"}"#

private func sign(_ t: TokenService, _ claims: String, kid: String? = nil) throws -> String {
    let bytes = Array(claims.utf8)
    let out = try bytes.withRawBytes { (raw) throws(BitsecError) -> [UInt8] in try t.sign(claims: raw, kid: kid) }
    return String(decoding: out, as: UTF8.self)
}

@Suite struct TokenVectorTests {
    /// Deterministic signatures (RS256, HS256, EdDSA) are reproduced byte for byte.
    @Test(arguments: ["jws/4_1.rsa_v15_signature.json", "jws/4_4.hmac-sha2_integrity_protection.json", "curve25519/jws.json"])
    func reproducesDeterministicSignatures(file: String) throws {
        let v = try JOSEVectors.load(file)
        let algText = try #require(v["input"]?["alg"]?.stringValue)
        let alg = try #require(JWSAlgorithm.parse(algText))
        let jwk = try #require(v["input"]?["key"])
        let key = try #require(try JWK.key(jwk, where: "vector", origin: "test", allowSecrets: true, alg: alg))
        let sigInput = try #require(v["signing"]?["sig-input"]?.stringValue)
        let input = Array(sigInput.utf8)
        let expected = try #require(v["signing"]?["sig"]?.stringValue)
        let sig = try input.withRawBytes { (raw) throws(BitsecError) -> [UInt8] in try key.sign(raw) }
        #expect(Base64.encodeString(sig) == expected)
        let compact = try #require(v["output"]?["compact"]?.stringValue)
        #expect(compact == String(decoding: input, as: UTF8.self) + "." + expected)
        #expect(input.withUnsafeBytes { i in sig.withUnsafeBytes { s in key.verify(i, signature: s) } })
    }

    /// Randomised ones (PS384, ES512) verify, and fail once altered.
    @Test(arguments: ["jws/4_2.rsa-pss_signature.json", "jws/4_3.ecdsa_signature.json"])
    func verifiesRandomisedSignatures(file: String) throws {
        let v = try JOSEVectors.load(file)
        let algText = try #require(v["input"]?["alg"]?.stringValue)
        let alg = try #require(JWSAlgorithm.parse(algText))
        let jwk = try #require(v["input"]?["key"])
        let key = try #require(try JWK.key(jwk, where: "vector", origin: "test", allowSecrets: true, alg: alg))
        let sigInput = try #require(v["signing"]?["sig-input"]?.stringValue)
        let input = Array(sigInput.utf8)
        let sigText = try #require(v["signing"]?["sig"]?.stringValue)
        var sig = b64(sigText)
        #expect(input.withUnsafeBytes { i in sig.withUnsafeBytes { s in key.verify(i, signature: s) } })
        // Our own signature verifies too.
        let mine = try input.withRawBytes { (raw) throws(BitsecError) -> [UInt8] in try key.sign(raw) }
        #expect(mine.count == sig.count)
        #expect(input.withUnsafeBytes { i in mine.withUnsafeBytes { s in key.verify(i, signature: s) } })
        sig[sig.count / 2] ^= 1
        #expect(!input.withUnsafeBytes { i in sig.withUnsafeBytes { s in key.verify(i, signature: s) } })
    }

    @Test func detachedAndMultipleSignatureExamplesVerify() throws {
        let v = try JOSEVectors.load("jws/4_8.multiple_signatures.json")
        let keys = try #require(v["input"]?["key"]?.arrayValue)
        let algs = try #require(v["input"]?["alg"]?.arrayValue)
        let sigs = try #require(v["output"]?["json"]?["signatures"]?.arrayValue)
        let payload = try #require(v["output"]?["json"]?["payload"]?.stringValue)
        var verified = 0
        for i in 0..<min(keys.count, algs.count, sigs.count) {
            // The ES512 signature has only an unprotected header: nothing to check in compact form.
            guard let protected = sigs[i]["protected"]?.stringValue, let alg = algs[i].stringValue.flatMap(JWSAlgorithm.parse),
                  let sigText = sigs[i]["signature"]?.stringValue,
                  let key = try JWK.key(keys[i], where: "v", origin: "t", allowSecrets: true, alg: alg) else { continue }
            let input = Array((protected + "." + payload).utf8)
            let sig = b64(sigText)
            #expect(input.withUnsafeBytes { i in sig.withUnsafeBytes { s in key.verify(i, signature: s) } })
            verified += 1
        }
        #expect(verified == 2)
    }
}

@Suite struct ECDSARangeTests {
    @Test func rAndSOutsideTheOrderAreRefused() {
        let n = ECCurve.p256.order
        #expect(n.count == 32 && ECCurve.p384.order.count == 48 && ECCurve.p521.order.count == 66)
        func der(_ r: [UInt8], _ s: [UInt8]) -> [UInt8]? {
            (r + s).withUnsafeBytes { ECDSASignature.der(fromRaw: $0, curve: .p256) }
        }
        let one = [UInt8](repeating: 0, count: 31) + [1]
        var nMinus1 = n
        nMinus1[31] -= 1
        #expect(der(one, one) != nil)
        #expect(der(nMinus1, nMinus1) != nil)
        #expect(der([UInt8](repeating: 0, count: 32), one) == nil)
        #expect(der(one, [UInt8](repeating: 0, count: 32)) == nil)
        #expect(der(n, one) == nil)
        #expect(der(one, [UInt8](repeating: 0xFF, count: 32)) == nil)
        #expect([UInt8](repeating: 1, count: 63).withUnsafeBytes { ECDSASignature.der(fromRaw: $0, curve: .p256) } == nil)
        // DER: high bit gets a leading zero; leading zeros are stripped.
        let d = der(nMinus1, one) ?? []
        #expect(d.prefix(4) == [0x30, 0x26, 0x02, 0x21])
        #expect(d.suffix(3) == [0x02, 0x01, 0x01])
    }
}

private final class RecordingHook: AuditHook, @unchecked Sendable {
    let events = Locked<[(String, String, String?)]>([])
    var automaticEventsEnabled: Bool { true }
    func emitAutomatic(_ event: AutomaticAuditEvent) {
        events.with { $0.append((event.type, event.subtype, event.reason)) }
    }
}

@Suite struct TokenServiceTests {
    @Test func auditEventsForRejectionsAndReloads() throws {
        let hook = RecordingHook()
        let t = try tokenService(hsConfig, audit: hook)
        let good = try sign(t, #"{"sub":"u","iss":"iss","aud":"aud","exp":2000000000}"#)
        #expect(try t.verify(good, at: 1_900_000_000).isValid)
        #expect(try t.verify(good, at: 2_100_000_000).reason == .expired)
        #expect(try t.verify("garbage", at: 0).reason == .malformed)
        try t.reload(jwks: Array(#"{"keys": []}"#.utf8))
        let events = hook.events.with { $0 }
        #expect(events.count == 3)
        #expect(events[0] == ("authentication", "token_rejected", "expired"))
        #expect(events[1] == ("authentication", "token_rejected", "malformed"))
        #expect(events[2] == ("key_management", "keys_reloaded", nil))
    }

    @Test func claimsAndHotFields() throws {
        let t = try tokenService(hsConfig)
        let token = try sign(t, #"{"sub":"u1","iss":"iss","aud":["x","aud"],"exp":2000000000,"role":"admin","roles":["admin","viewer"],"scope":"a:read  b:write","scp":["c"],"tenant_id":"t9","jti":"j\"1"}"#)
        let v = try t.verify(token, at: 1_900_000_000)
        let c = try #require(v.claims)
        #expect(v.isValid)
        // scope wins over scp (the first present, as bitsec_check_permission_claims reads them).
        #expect(c.roles == ["admin", "viewer"] && c.scopes == ["a:read", "b:write"])
        #expect(c.sub == "u1" && c.tenant == "t9" && c.jti == "j\"1" && c.exp == 2_000_000_000)
        let doc = try JSONReader.parse(c.result)
        #expect(doc["jti"]?.stringValue == "j\"1")
        #expect(doc["claims"]?["tenant_id"]?.stringValue == "t9")
        #expect(doc["scope"]?.arrayValue?.count == 2)
    }

    /// `iss`, `aud`, required claim names and `kid` match byte for byte (RFC 7519 section 2:
    /// no canonicalisation), not up to Unicode canonical equivalence as Swift's String `==`
    /// and hashing do: an NFD "cafe\u{301}-api" is not the configured NFC "caf\u{e9}-api".
    @Test func issuerAudienceClaimNamesAndKidMatchByteForByte() throws {
        // The JSON escapes keep the exact code points: NFC é is \u00e9, NFD is e\u0301.
        let keys = #""keys": [{"kid": "cl\u00e9", "alg": "HS256", "secret": {"value": "\#(hsSecret)"}}]"#
        let t = try tokenService(#"{\#(keys), "issuer": "https://issuer.example/\u00e9", "audience": "caf\u00e9-api", "required_claims": ["\u00e9tat"]}"#)
        let iss = #""iss":"https://issuer.example/\u00e9""#, issNFD = #""iss":"https://issuer.example/e\u0301""#
        let aud = #""aud":"caf\u00e9-api""#, audNFD = #""aud":"cafe\u0301-api""#
        let etat = #""\u00e9tat":1"#, etatNFD = #""e\u0301tat":1"#
        func verify(_ claims: String) throws -> TokenReason {
            try t.verify(try sign(t, "{" + claims + #","exp":2000000000}"#), at: 1_900_000_000).reason
        }
        #expect(try verify([iss, aud, etat].joined(separator: ",")) == .valid)
        #expect(try verify([issNFD, aud, etat].joined(separator: ",")) == .wrongIssuer)
        #expect(try verify([iss, audNFD, etat].joined(separator: ",")) == .wrongAudience)
        #expect(try verify([iss, #""aud":["other","cafe\u0301-api"]"#, etat].joined(separator: ",")) == .wrongAudience)
        #expect(try verify([iss, #""aud":["other","caf\u00e9-api"]"#, etat].joined(separator: ",")) == .valid)
        #expect(try verify([iss, aud, etatNFD].joined(separator: ",")) == .missingClaim)
        // kid: a key named with the NFD form of the configured kid signs; the NFC key is not
        // selected for it (unknown_kid), and kids that differ only so are two kids.
        let signer = try tokenService(#"{"keys": [{"kid": "cle\u0301", "alg": "HS256", "secret": {"value": "\#(hsSecret)"}}]}"#)
        let nfdKid = try sign(signer, "{" + [iss, aud, etat].joined(separator: ",") + #","exp":2000000000}"#)
        #expect(try t.verify(nfdKid, at: 1_900_000_000).reason == .unknownKid)
        #expect(t.keys.key(kid: "cle\u{301}") == nil && t.keys.key(kid: "cl\u{e9}") != nil)
        let both = try tokenService(#"{"keys": [{"kid": "cl\u00e9", "alg": "HS256", "secret": {"value": "\#(hsSecret)"}}, {"kid": "cle\u0301", "alg": "HS256", "secret": {"value": "fedcba9876543210fedcba9876543210"}}]}"#)
        #expect(both.keys.keys.count == 2)
    }

    @Test func wrongTypesAreInvalidClaims() throws {
        let t = try tokenService(hsConfig)
        for claims in [#"{"iss":"iss","aud":"aud","exp":"2000000000"}"#, #"{"iss":"iss","aud":"aud","exp":2000000000,"nbf":true}"#,
                       #"{"iss":1,"aud":"aud","exp":2000000000}"#, #"{"iss":"iss","aud":{},"exp":2000000000}"#,
                       #"{"iss":"iss","aud":"aud","exp":2000000000,"sub":null}"#, #"{"iss":"iss","aud":"aud","exp":2000000000,"jti":5}"#] {
            #expect(try t.verify(try sign(t, claims), at: 1_900_000_000).reason == .invalidClaim, "\(claims)")
        }
        // A fractional exp is a number: floor.
        #expect(try t.verify(try sign(t, #"{"iss":"iss","aud":"aud","exp":1900000000.9}"#), at: 1_899_999_960).isValid)
    }

    @Test func revocationInRedis() throws {
        guard let port = TestRedis.port else { return }
        let prefix = "tokcore\(Clock.nowMicros()):"
        let pool = RedisPool(config: RedisConfig(endpoint: .tcp(host: "127.0.0.1", port: port), commandTimeoutMs: 1000, keyPrefix: prefix))
        let t = try tokenService(hsConfig, redis: pool)
        #expect(t.revocations.backendName == "redis")
        let now = Clock.nowSeconds()
        let token = try sign(t, #"{"iss":"iss","aud":"aud","exp":\#(now + 100),"jti":"r1"}"#)
        #expect(try t.verify(token).isValid)
        #expect(try t.revoke(jti: "r1", exp: now + 100))
        #expect(try !t.revoke(jti: "r1", exp: now + 100))
        #expect(try t.verify(token).reason == .revoked)
        // A token without sub: the key is tagged on its jti.
        let ttl = try pool.command("TTL", prefix + "revoked:{#r1}:j:r1")
        #expect((ttl.integer ?? 0) > 100 && (ttl.integer ?? 0) <= 130)
        // A second service on the same Redis sees it.
        let other = try tokenService(hsConfig, redis: pool)
        #expect(try other.verify(token).reason == .revoked)
    }

    @Test func eightThreadsVerifyWhileKeysReload() throws {
        let t = try tokenService(hsConfig)
        let rotating = #"{"keys": [{"kty": "oct", "kid": "rot", "alg": "HS384", "k": "\#(Base64.encodeString(Array(repeating: UInt8(7), count: 48)))"}]}"#
        let token = try sign(t, #"{"iss":"iss","aud":"aud","exp":2000000000}"#)
        let failures = Atomic<Int>(0)
        // Fixed amounts of work, no waiting on each other: concurrentPerform may run fewer
        // workers than iterations at once (the Python suite runs 8 real threads as well).
        DispatchQueue.concurrentPerform(iterations: 9) { i in
            if i == 8 {
                for k in 0..<300 { try? t.reload(jwks: Array((k % 2 == 0 ? rotating : #"{"keys": []}"#).utf8)) }
            } else {
                for _ in 0..<500 where (try? t.verify(token, at: 1_900_000_000).isValid) != true {
                    failures.add(1, ordering: .relaxed)
                }
            }
        }
        #expect(failures.load(ordering: .relaxed) == 0)
        #expect(t.keys.generation == 300)
    }
}

/// nbf, iat and exp are compared with the evaluation instant exactly, fractions included,
/// and the leeway moves each bound by exactly its number of seconds.
@Suite struct TokenTimeClaimTests {
    private static let strict = #"{"keys": [{"kid": "hs", "alg": "HS256", "secret": {"value": "\#(hsSecret)"}}], "leeway_seconds": 0}"#
    private static let lenient = #"{"keys": [{"kid": "hs", "alg": "HS256", "secret": {"value": "\#(hsSecret)"}}], "leeway_seconds": 5}"#

    private func verify(_ t: TokenService, _ token: String, _ s: Int64, _ ns: Int32 = 0) throws -> TokenReason {
        try Array(token.utf8).withRawBytes { (raw) throws(BitsecError) -> TokenReason in
            try t.verify(raw, instant: Instant(seconds: s, nanoseconds: ns)).reason
        }
    }

    @Test func fractionalNotBeforeIsNotAcceptedEarly() throws {
        let t = try tokenService(Self.strict)
        let tok = try sign(t, #"{"exp":2000000000,"nbf":1900000000.5}"#)
        // At the whole second before the fraction: not yet valid (was accepted: nbf rounded down).
        #expect(try t.verify(tok, at: 1_900_000_000).reason == .notYetValid)
        #expect(try verify(t, tok, 1_900_000_000, 499_999_000) == .notYetValid)
        #expect(try verify(t, tok, 1_900_000_000, 500_001_000) == .valid)
        #expect(try t.verify(tok, at: 1_900_000_001).reason == .valid)
    }

    @Test func fractionalIssuedAtIsNotAcceptedEarly() throws {
        let t = try tokenService(Self.strict)
        let tok = try sign(t, #"{"exp":2000000000,"iat":1900000000.25}"#)
        #expect(try t.verify(tok, at: 1_900_000_000).reason == .issuedInFuture)
        #expect(try verify(t, tok, 1_900_000_000, 249_999_000) == .issuedInFuture)
        #expect(try verify(t, tok, 1_900_000_000, 250_001_000) == .valid)
    }

    @Test func fractionalExpiryIsNotAcceptedLate() throws {
        let t = try tokenService(Self.strict)
        let tok = try sign(t, #"{"exp":1900000000.75}"#)
        #expect(try t.verify(tok, at: 1_900_000_000).reason == .valid)
        #expect(try verify(t, tok, 1_900_000_000, 749_999_000) == .valid)
        #expect(try verify(t, tok, 1_900_000_000, 750_001_000) == .expired)
    }

    @Test func leewayMovesEachBoundByExactlyItsSeconds() throws {
        let t = try tokenService(Self.lenient)
        let tok = try sign(t, #"{"exp":1900000100.5,"nbf":1900000000.5,"iat":1900000000.5}"#)
        // nbf - 5 s = 1899999995.5: before it not yet valid, from it on valid.
        #expect(try t.verify(tok, at: 1_899_999_995).reason == .notYetValid)
        #expect(try verify(t, tok, 1_899_999_995, 499_999_000) == .notYetValid)
        #expect(try verify(t, tok, 1_899_999_995, 500_001_000) == .valid)
        // exp + 5 s = 1900000105.5: valid before it, expired from it on.
        #expect(try verify(t, tok, 1_900_000_105, 499_999_000) == .valid)
        #expect(try verify(t, tok, 1_900_000_105, 500_001_000) == .expired)
        // Integer claims: the bounds are whole seconds, as before.
        let whole = try sign(t, #"{"exp":1900000100,"nbf":1900000000}"#)
        #expect(try t.verify(whole, at: 1_899_999_994).reason == .notYetValid)
        #expect(try t.verify(whole, at: 1_899_999_995).reason == .valid)
        #expect(try t.verify(whole, at: 1_900_000_104).reason == .valid)
        #expect(try t.verify(whole, at: 1_900_000_105).reason == .expired)
    }

    @Test func revocationUntilExpCoversAFractionalExpiry() throws {
        let t = try tokenService(#"{"keys": [{"kid": "hs", "alg": "HS256", "secret": {"value": "\#(hsSecret)"}}]}"#)  // leeway 30
        let tok = try sign(t, #"{"exp":1900000000.7,"jti":"frac-exp"}"#)
        let c = try #require(try t.verify(tok, at: 1_899_999_000).claims)
        #expect(try t.revoke(jti: "frac-exp", exp: try #require(c.exp), at: 1_899_999_000))
        // 0.5 s past exp's whole second plus the leeway: not yet expired, so it must be revoked.
        #expect(try verify(t, tok, 1_900_000_030, 500_000_000) == .revoked)
        #expect(try verify(t, tok, 1_900_000_030, 800_000_000) == .expired)
    }

    @Test func verifiedClaimsRoundTowardsRefusing() throws {
        let c = try #require(VerifiedClaims(payload: Array(#"{"exp":10.5,"nbf":10.5,"iat":-0.5}"#.utf8)))
        #expect(c.exp == 11 && c.nbf == 11 && c.iat == 0)
        // For the revocation epochs, iat rounds towards revoking: down.
        #expect(c.revocationIat == -1)
        #expect(VerifiedClaims(payload: Array(#"{"iat":7}"#.utf8))?.revocationIat == 7)
        #expect(VerifiedClaims(payload: Array(#"{"iat":7.9999999999}"#.utf8))?.revocationIat == 7)
        #expect(VerifiedClaims(payload: Array(#"{}"#.utf8))?.revocationIat == nil)
        let e = try #require(c.expires), n = try #require(c.notBefore), i = try #require(c.issuedAt)
        #expect(e < Instant(seconds: 10, nanoseconds: 500_000_000) && e > Instant(seconds: 10, nanoseconds: 499_999_990))
        #expect(n > Instant(seconds: 10, nanoseconds: 500_000_000) && n < Instant(seconds: 10, nanoseconds: 500_000_010))
        #expect(i > Instant(seconds: -1, nanoseconds: 500_000_000) && i < Instant(seconds: -1, nanoseconds: 500_000_010))
        let huge = try #require(VerifiedClaims(payload: Array(#"{"exp":1e300,"nbf":-1e300}"#.utf8)))
        #expect(huge.expires == .max && huge.notBefore == .min)
    }

    @Test func tokenWithoutScopeWritesNullScope() throws {
        let t = try tokenService(Self.strict)
        let none = try #require(try t.verify(try sign(t, #"{"exp":2000000000,"role":"r"}"#), at: 1_900_000_000).claims)
        #expect(!none.hasScopes)
        #expect(try JSONReader.parse(none.result)["scope"] == .null)
        let empty = try #require(try t.verify(try sign(t, #"{"exp":2000000000,"scope":""}"#), at: 1_900_000_000).claims)
        #expect(empty.hasScopes)
        #expect(try JSONReader.parse(empty.result)["scope"] == .array([]))
    }

    @Test func resultFollowsThePermissionReader() throws {
        let c = try #require(VerifiedClaims(payload: Array(#"{"tenant":"t2","department":"d","scopes":"a b","scp":"c"}"#.utf8)))
        #expect(c.tenant == "t2" && c.department == "d" && c.scopes == ["a", "b"] && c.invalidClaim == nil)
        let doc = try JSONReader.parse(c.result)
        #expect(doc["tenant_id"]?.stringValue == "t2" && doc["department"]?.stringValue == "d")
        #expect(doc["scope"] == .array([.string("a"), .string("b")]))
        let both = try #require(VerifiedClaims(payload: Array(#"{"tenant_id":"t1","tenant":"t2","scope":"x","scp":["y"],"department":5}"#.utf8)))
        #expect(both.tenant == "t1" && both.scopes == ["x"] && both.department == nil && both.invalidClaim == nil)
    }
}
