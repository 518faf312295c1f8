/// The claim rules of one runtime (the `tokens` section).
public struct TokenPolicy: Sendable {
    public var leeway: Int64 = 30
    public var issuers: [String] = []
    public var audiences: [String] = []
    public var requiredClaims: [String] = []
    public var requireExp = true
    /// Expected `typ` header (compared case-insensitively, `application/` prefix optional).
    public var typ: String? = nil
    public var maxTokenBytes = 8192
    /// Refuse a refresh token (`"type": "refresh"`) where an access token is expected.
    public var rejectRefreshTokens = true

    public init() {}

    func typMatches(_ t: String) -> Bool {
        guard let typ else { return true }
        func norm(_ s: String) -> String {
            let l = s.lowercased()
            return l.hasPrefix("application/") ? String(l.dropFirst("application/".count)) : l
        }
        return norm(t) == norm(typ)
    }
}

/// The claims of a token whose signature verified: parsed once (and kept in the
/// verified-token cache), with the fields every request uses already extracted.
public final class VerifiedClaims: Sendable {
    /// The payload exactly as signed (valid strict JSON).
    public let payload: [UInt8]
    public let claims: JSONObject
    public let exp: Int64?
    public let nbf: Int64?
    public let iat: Int64?
    public let iss: String?
    public let aud: [String]?
    public let sub: String?
    public let jti: String?
    public let tenant: String?
    public let roles: [String]
    public let scopes: [String]
    public let type: String?
    /// The result document written to callers:
    /// `{"sub":..,"roles":[..],"scope":[..],"tenant_id":..,"jti":..,"exp":..,"claims":{...}}`.
    public let result: [UInt8]
    /// A claim had the wrong JSON type (decided at parse time, reported with the others).
    public let invalidClaim: String?

    /// Parses the payload JSON; nil when it is not a JSON object.
    public init?(payload: [UInt8], maxDepth: Int = Limits.maxJSONDepth) {
        guard let v = try? JSONReader.parse(payload, options: .init(maxBytes: Int.max, maxDepth: maxDepth)),
              case .object(let o) = v else { return nil }
        self.payload = payload
        self.claims = o
        var bad: String? = nil
        func time(_ k: String) -> Int64? {
            guard let m = o[k] else { return nil }
            guard case .number(let n) = m else { bad = bad ?? k; return nil }
            if let i = n.int64 { return i }
            let d = n.double.rounded(.down)
            if d >= 9.2e18 { return Int64.max }
            if d <= -9.2e18 { return Int64.min }
            return Int64(d)
        }
        func string(_ k: String) -> String? {
            guard let m = o[k] else { return nil }
            guard case .string(let s) = m else { bad = bad ?? k; return nil }
            return s
        }
        func strings(_ k: String, splitSpaces: Bool) -> [String]? {
            guard let m = o[k] else { return nil }
            switch m {
            case .string(let s):
                return splitSpaces ? s.split(separator: " ").map(String.init) : [s]
            case .array(let a):
                var out: [String] = []
                for item in a {
                    guard case .string(let s) = item else { bad = bad ?? k; return nil }
                    out.append(s)
                }
                return out
            default:
                bad = bad ?? k
                return nil
            }
        }
        exp = time("exp")
        nbf = time("nbf")
        iat = time("iat")
        iss = string("iss")
        aud = strings("aud", splitSpaces: false)
        sub = string("sub")
        jti = string("jti")
        tenant = string("tenant_id")
        type = string("type")
        var r: [String] = strings("role", splitSpaces: false) ?? []
        for x in strings("roles", splitSpaces: false) ?? [] where !r.contains(x) { r.append(x) }
        roles = r
        var sc = strings("scope", splitSpaces: true) ?? []
        for x in strings("scp", splitSpaces: true) ?? [] where !sc.contains(x) { sc.append(x) }
        scopes = sc
        invalidClaim = bad

        var w = JSONWriter(reserving: payload.count + 128)
        w.raw("{\"sub\":")
        if let sub { w.writeString(sub) } else { w.raw("null") }
        w.raw(",\"roles\":")
        w.write(.array(roles.map { .string($0) }))
        w.raw(",\"scope\":")
        w.write(.array(scopes.map { .string($0) }))
        w.raw(",\"tenant_id\":")
        if let tenant { w.writeString(tenant) } else { w.raw("null") }
        w.raw(",\"jti\":")
        if let jti { w.writeString(jti) } else { w.raw("null") }
        w.raw(",\"exp\":")
        if let exp { w.writeInt(exp) } else { w.raw("null") }
        w.raw(",\"claims\":")
        var bytes = w.bytes
        bytes.append(contentsOf: payload)
        bytes.append(UInt8(ascii: "}"))
        result = bytes
    }
}
