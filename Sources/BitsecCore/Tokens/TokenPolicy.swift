internal import Synchronization

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
    /// Refuse a token whose header has no `kid` (`missing_kid`), even when one key applies.
    public var requireKid = false

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
    /// The top-level member names of the payload, in order.
    public let claimNames: [String]
    private let maxDepth: Int
    /// The whole claims object, parsed from `payload` on each access (the verify path only
    /// needs the fields below, which are extracted without building the tree).
    public var claims: JSONObject {
        guard let v = try? JSONReader.parse(payload, options: .init(maxBytes: Int.max, maxDepth: maxDepth)),
              case .object(let o) = v else { return JSONObject() }
        return o
    }
    /// `exp` in whole seconds, a fraction rounded up: the first whole second at which the
    /// token is expired (before the leeway), so that a revocation kept until `exp` plus the
    /// leeway covers every instant the token verifies at.
    public let exp: Int64?
    /// `nbf` and `iat` in whole seconds (a fraction rounded up: never earlier than the claim).
    public let nbf: Int64?
    public let iat: Int64?
    /// `iat` in whole seconds rounded the other way (a fraction rounded down: never later
    /// than the claim): what revocation epochs (whole seconds, `iat <= epoch` revokes) are
    /// compared with, so that a revocation in the second a token was issued covers it, also
    /// when its `iat` has a fraction. Equal to `iat` for an integer `iat`.
    public let revocationIat: Int64?
    /// The time claims as instants: `exp` never later, `nbf` and `iat` never earlier than the
    /// number in the token (exact for integers and to the nanosecond for fractions).
    public let expires: Instant?
    public let notBefore: Instant?
    public let issuedAt: Instant?
    public let iss: String?
    public let aud: [String]?
    public let sub: String?
    public let jti: String?
    /// `tenant_id`, else `tenant` (a string).
    public let tenant: String?
    /// `department` (a string; any other value is ignored, as the permission reader does).
    public let department: String?
    public let roles: [String]
    /// The first of `scope` (split on spaces), `scopes`, `scp` (string or array) that the
    /// token carries: the reading of `bitsec_check_permission_claims`.
    public let scopes: [String]
    /// Whether the token carries one of those claims (an empty one included).
    public let hasScopes: Bool
    public let type: String?
    /// `session_id` when it is a string (issued pairs carry one); nil otherwise.
    public let sessionId: String?
    /// The result document written to callers: `{"sub":..,"roles":[..],"scope":[..] or
    /// null,"tenant_id":..,"department":..,"jti":..,"exp":..,"claims":{...}}`. Its top-level
    /// fields follow the reading of `bitsec_check_permission_claims` (scope null for a token
    /// without one, tenant_id falling back to `tenant`, department), so that the document
    /// read as claims gives the principal the token's own claims give.
    public let result: [UInt8]
    /// The first registered claim that had the wrong JSON type (reported after the
    /// signature check as `invalid_claim`).
    public let invalidClaim: String?
    /// The packed principal of `result` (as `bitsec_check_permission_claims` reads it), built on
    /// first use by the request guard and kept with the claims (so with the verified-token
    /// cache entry): a cached token's permission check parses no JSON.
    private let principalMemo = Mutex<[UInt8]?>(nil)

    public func packedPrincipal() throws(BitsecError) -> [UInt8] {
        if let p = principalMemo.withLock({ $0 }) { return p }
        let p = try result.withRawBytes { (raw) throws(BitsecError) -> [UInt8] in try ClaimsPrincipal.pack(raw) }
        principalMemo.withLock { $0 = p }
        return p
    }

    /// Parses the payload JSON; nil when it is not a JSON object.
    public init?(payload: [UInt8], maxDepth: Int = Limits.maxJSONDepth) {
        self.payload = payload
        self.maxDepth = maxDepth
        var bad: String? = nil
        var exp: Instant? = nil, nbf: Instant? = nil, iat: Instant? = nil, iatDown: Instant? = nil
        var iss: String? = nil, sub: String? = nil, jti: String? = nil, tenant: String? = nil, type: String? = nil
        var tenantAlt: String? = nil, department: String? = nil
        var sessionId: String? = nil
        var aud: [String]? = nil
        var roles: [String] = [], extraRoles: [String] = []
        var scopeClaim: [String]? = nil, scopesClaim: [String]? = nil, scpClaim: [String]? = nil
        // One strict pass over the payload (exactly the reader's rules: duplicates, UTF-8,
        // depth, numbers), materialising only the registered claims, dispatched on the
        // name's bytes; every other member is validated and skipped, no tree is built.
        let names: [String]? = payload.withUnsafeBufferPointer { b in
            try? JSONReader.scanObject(b, options: .init(maxBytes: Int.max, maxDepth: maxDepth),
                                       select: { ClaimName.of($0) != .other }) { key, v in
                switch ClaimName.of(key) {
                case .exp: exp = Self.time(v, key, roundUp: false, &bad)
                case .nbf: nbf = Self.time(v, key, roundUp: true, &bad)
                case .iat:
                    iat = Self.time(v, key, roundUp: true, &bad)
                    if case .number(let n) = v { iatDown = Instant(n, roundUp: false) }
                case .iss: iss = Self.string(v, key, &bad)
                case .sub: sub = Self.string(v, key, &bad)
                case .jti: jti = Self.string(v, key, &bad)
                case .tenant: tenant = Self.string(v, key, &bad)
                case .type: type = Self.string(v, key, &bad)
                case .sessionId: if case .string(let s) = v { sessionId = s }
                case .aud: aud = Self.strings(v, key, split: false, &bad)
                case .role: roles = Self.strings(v, key, split: false, &bad) ?? []
                case .roles: extraRoles = Self.strings(v, key, split: false, &bad) ?? []
                case .scope: scopeClaim = Self.strings(v, key, split: true, &bad) ?? []
                case .scp: scpClaim = Self.strings(v, key, split: true, &bad) ?? []
                case .scopes: scopesClaim = Self.lenientScopes(v)
                case .tenantAlt: if case .string(let t) = v { tenantAlt = t }
                case .department: if case .string(let d) = v { department = d }
                case .other: break
                }
            }
        }
        guard let names else { return nil }
        self.claimNames = names
        // (by bytes: `role` "r\u{E9}viseur" and `roles` ["re\u{301}viseur"] are two roles, as
        // the permission engine and a token's raw claims compare them)
        for r in extraRoles where !roles.containsBytes(of: r) { roles.append(r) }
        let chosenScopes = scopeClaim ?? scopesClaim ?? scpClaim
        self.expires = exp; self.notBefore = nbf; self.issuedAt = iat
        self.exp = exp?.secondsRoundedUp; self.nbf = nbf?.secondsRoundedUp; self.iat = iat?.secondsRoundedUp
        self.revocationIat = iatDown?.seconds
        self.hasScopes = chosenScopes != nil
        self.iss = iss; self.sub = sub; self.jti = jti; self.tenant = tenant ?? tenantAlt; self.type = type
        self.department = department
        self.aud = aud; self.roles = roles; self.scopes = chosenScopes ?? []
        self.sessionId = sessionId
        invalidClaim = bad

        var w = FastJSON(reserving: payload.count + 160)
        w.raw("{\"sub\":"); w.optionalString(sub)
        w.raw(",\"roles\":"); w.stringArray(roles)
        w.raw(",\"scope\":")
        if let chosenScopes { w.stringArray(chosenScopes) } else { w.raw("null") }
        w.raw(",\"tenant_id\":"); w.optionalString(self.tenant)
        w.raw(",\"department\":"); w.optionalString(department)
        w.raw(",\"jti\":"); w.optionalString(jti)
        w.raw(",\"exp\":")
        if let exp = self.exp { w.int(exp) } else { w.raw("null") }
        w.raw(",\"claims\":")
        w.bytes.append(contentsOf: payload)
        w.bytes.append(UInt8(ascii: "}"))
        result = w.bytes
    }

    /// A NumericDate (RFC 7519: seconds, possibly fractional) as an instant, rounded towards
    /// refusing: up for `nbf` and `iat`, down for `exp`.
    private static func time(_ v: JSONValue, _ k: String, roundUp: Bool, _ bad: inout String?) -> Instant? {
        guard case .number(let n) = v else { bad = bad ?? k; return nil }
        return Instant(n, roundUp: roundUp)
    }

    /// `scopes` (not a registered claim): read as the permission reader does, never refused:
    /// null is absent, a string is split on spaces, an array gives its strings, any other
    /// value counts as present and empty.
    private static func lenientScopes(_ v: JSONValue) -> [String]? {
        switch v {
        case .null: return nil
        case .string(let s): return s.split(separator: " ").map(String.init)
        case .array(let a): return a.compactMap { $0.stringValue }
        default: return []
        }
    }

    private static func string(_ v: JSONValue, _ k: String, _ bad: inout String?) -> String? {
        guard case .string(let s) = v else { bad = bad ?? k; return nil }
        return s
    }

    private static func strings(_ v: JSONValue, _ k: String, split: Bool, _ bad: inout String?) -> [String]? {
        switch v {
        case .string(let s):
            guard split else { return [s] }
            var t = s
            return t.withUTF8 { u -> [String] in
                var out: [String] = []
                var start = 0
                for k in 0...u.count where k == u.count || u[k] == 0x20 {
                    if k > start { out.append(String(decoding: UnsafeBufferPointer(rebasing: u[start..<k]), as: UTF8.self)) }
                    start = k + 1
                }
                return out
            }
        case .array(let a):
            var out: [String] = []
            out.reserveCapacity(a.count)
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
}

/// The claim names bitsec reads, recognised from their bytes.
enum ClaimName {
    case exp, nbf, iat, iss, sub, jti, aud, tenant, type, role, roles, scope, scp
    case scopes, tenantAlt, department, sessionId, other

    @inline(__always)
    static func of(_ key: String) -> ClaimName {
        var k = key
        return k.withUTF8 { b -> ClaimName in
            // The name's bytes packed big-endian into an integer: one compare per candidate.
            let n = b.count
            guard n >= 3, n <= 10 else { return .other }
            var v: UInt64 = 0
            for i in 0..<min(n, 8) { v = v << 8 | UInt64(b[i]) }
            switch n {
            case 3:
                switch v {
                case 0x657870: return .exp  // exp
                case 0x6E6266: return .nbf  // nbf
                case 0x696174: return .iat  // iat
                case 0x697373: return .iss  // iss
                case 0x737562: return .sub  // sub
                case 0x6A7469: return .jti  // jti
                case 0x617564: return .aud  // aud
                case 0x736370: return .scp  // scp
                default: return .other
                }
            case 4:
                if v == 0x726F_6C65 { return .role }  // role
                if v == 0x7479_7065 { return .type }  // type
                return .other
            case 5:
                if v == 0x72_6F6C_6573 { return .roles }  // roles
                if v == 0x73_636F_7065 { return .scope }  // scope
                return .other
            case 6:
                if v == 0x7363_6F70_6573 { return .scopes }  // scopes
                if v == 0x7465_6E61_6E74 { return .tenantAlt }  // tenant
                return .other
            case 9:
                // "tenant_i" + "d"
                return v == 0x7465_6E61_6E74_5F69 && b[8] == UInt8(ascii: "d") ? .tenant : .other
            case 10:
                // "departme" + "nt", "session_" + "id"
                if v == 0x6465_7061_7274_6D65 && b[8] == UInt8(ascii: "n") && b[9] == UInt8(ascii: "t") { return .department }
                return v == 0x7365_7373_696F_6E5F && b[8] == UInt8(ascii: "i") && b[9] == UInt8(ascii: "d") ? .sessionId : .other
            default:
                return .other
            }
        }
    }
}

/// A minimal JSON writer for the result document: strings without anything to escape (the
/// common case) are copied in one append.
struct FastJSON {
    var bytes: [UInt8]

    init(reserving n: Int) {
        bytes = []
        bytes.reserveCapacity(n)
    }

    mutating func raw(_ s: StaticString) {
        bytes.append(contentsOf: UnsafeBufferPointer(start: s.utf8Start, count: s.utf8CodeUnitCount))
    }

    mutating func string(_ s: String) {
        var t = s
        let clean = t.withUTF8 { u -> Bool in
            var ok = true
            for c in u where c < 0x20 || c == 0x22 || c == 0x5C || c == 0x7F { ok = false; break }
            if ok {
                bytes.append(0x22)
                bytes.append(contentsOf: u)
                bytes.append(0x22)
            }
            return ok
        }
        if !clean {
            var w = JSONWriter(reserving: s.utf8.count + 8)
            w.writeString(s)
            bytes.append(contentsOf: w.bytes)
        }
    }

    mutating func optionalString(_ s: String?) {
        if let s { string(s) } else { raw("null") }
    }

    mutating func stringArray(_ a: [String]) {
        bytes.append(UInt8(ascii: "["))
        for (i, s) in a.enumerated() {
            if i > 0 { bytes.append(UInt8(ascii: ",")) }
            string(s)
        }
        bytes.append(UInt8(ascii: "]"))
    }

    mutating func int(_ i: Int64) { bytes.append(contentsOf: String(i).utf8) }
}
