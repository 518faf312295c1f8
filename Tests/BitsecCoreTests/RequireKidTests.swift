// tokens.require_kid: a token without a kid header is refused (missing_kid), even when only
// one key could verify it; without the option such a token is accepted when one key applies.
import Testing
import BitsecCore

private let secret = "0123456789abcdef0123456789abcdef"

private func service(_ json: String) throws -> TokenService {
    let ctx = CapabilityContext(config: ConfigContext(allowInlineSecrets: true), redis: nil, audit: nil)
    return try TokenService.read(try ConfigObject(try JSONReader.parse(json), path: "tokens"), context: ctx)
}

/// A token signed by a key that has no kid (so its header has none), valid for the others.
private func tokenWithoutKid() throws -> String {
    let signer = try service(#"{"keys": [{"alg": "HS256", "secret": {"value": "\#(secret)"}}], "issuer": "iss", "audience": "aud"}"#)
    let claims = Array(#"{"sub":"u1","iss":"iss","aud":"aud","exp":2000000000}"#.utf8)
    let out = try claims.withRawBytes { (raw) throws(BitsecError) -> [UInt8] in try signer.sign(claims: raw, kid: nil) }
    let text = String(decoding: out, as: UTF8.self)
    let header = Base64.decodeURLStrict(Array(text.utf8.prefix { $0 != UInt8(ascii: ".") })) ?? []
    #expect(!String(decoding: header, as: UTF8.self).contains("kid"))
    return text
}

@Suite struct RequireKidTests {
    @Test func aTokenWithoutKidIsRefusedWhenRequired() throws {
        let token = try tokenWithoutKid()
        let one = #"{"keys": [{"kid": "hs", "alg": "HS256", "secret": {"value": "\#(secret)"}}], "issuer": "iss", "audience": "aud""#
        // Default (false): one key applies, the token is accepted, as before.
        let lenient = try service(one + "}")
        #expect(!lenient.policy.requireKid)
        #expect(try lenient.verify(token, at: 1_900_000_000).reason == .valid)
        // Required: refused with its own reason, a decision (no error).
        let strict = try service(one + #", "require_kid": true}"#)
        #expect(try strict.verify(token, at: 1_900_000_000).reason == .missingKid)
        #expect(TokenReason.missingKid.text == "missing_kid")
        // A token with the kid still verifies.
        let claims = Array(#"{"sub":"u1","iss":"iss","aud":"aud","exp":2000000000}"#.utf8)
        let withKid = try claims.withRawBytes { (raw) throws(BitsecError) -> [UInt8] in try strict.sign(claims: raw, kid: "hs") }
        #expect(try strict.verify(String(decoding: withKid, as: UTF8.self), at: 1_900_000_000).reason == .valid)
    }

    @Test func requireKidNeedsAKidOnEveryKey() throws {
        expectError(.config, "require_kid") {
            _ = try service(#"{"keys": [{"alg": "HS256", "secret": {"value": "\#(secret)"}}], "require_kid": true}"#)
        }
    }
}
