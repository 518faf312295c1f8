/// The JWS algorithms bitsec verifies and signs (RFC 7518, RFC 8037). `none` is not one of
/// them and never will be: there is no code path that accepts an unsigned token.
public enum JWSAlgorithm: String, Sendable, CaseIterable {
    case rs256 = "RS256", rs384 = "RS384", rs512 = "RS512"
    case ps256 = "PS256", ps384 = "PS384", ps512 = "PS512"
    case es256 = "ES256", es384 = "ES384", es512 = "ES512"
    case edDSA = "EdDSA"
    case hs256 = "HS256", hs384 = "HS384", hs512 = "HS512"

    /// What kind of key an algorithm needs. A key's kind is decided by how it was built
    /// (its JWK `kty` or its PEM type), never by comparing text with the token.
    public enum KeyKind: Sendable { case rsa, ec, ed25519, hmac }

    public var keyKind: KeyKind {
        switch self {
        case .rs256, .rs384, .rs512, .ps256, .ps384, .ps512: return .rsa
        case .es256, .es384, .es512: return .ec
        case .edDSA: return .ed25519
        case .hs256, .hs384, .hs512: return .hmac
        }
    }

    /// The digest name for OpenSSL (nil for EdDSA, which hashes internally).
    public var digestName: String? {
        switch self {
        case .rs256, .ps256, .es256, .hs256: return "SHA256"
        case .rs384, .ps384, .es384, .hs384: return "SHA384"
        case .rs512, .ps512, .es512, .hs512: return "SHA512"
        case .edDSA: return nil
        }
    }

    /// Digest length in bytes (the minimum HMAC secret length, RFC 7518 §3.2).
    public var digestLength: Int {
        switch self {
        case .rs256, .ps256, .es256, .hs256: return 32
        case .rs384, .ps384, .es384, .hs384: return 48
        case .rs512, .ps512, .es512, .hs512: return 64
        case .edDSA: return 64
        }
    }

    public var isPSS: Bool { self == .ps256 || self == .ps384 || self == .ps512 }

    /// The curve an ES algorithm is bound to (RFC 7518 §3.4).
    public var curve: ECCurve? {
        switch self {
        case .es256: return .p256
        case .es384: return .p384
        case .es512: return .p521
        default: return nil
        }
    }

    /// Parses the header's `alg` exactly (case-sensitive, as RFC 7515 requires).
    @inline(__always)
    public static func parse(_ s: String) -> JWSAlgorithm? { JWSAlgorithm(rawValue: s) }
}

/// The NIST curves of ES256/384/512.
public enum ECCurve: String, Sendable {
    case p256 = "P-256", p384 = "P-384", p521 = "P-521"

    /// OpenSSL's group name.
    public var groupName: String {
        switch self {
        case .p256: return "prime256v1"
        case .p384: return "secp384r1"
        case .p521: return "secp521r1"
        }
    }

    /// Bytes of one coordinate, of r and of s in the JWS `R||S` form.
    public var coordinateBytes: Int {
        switch self {
        case .p256: return 32
        case .p384: return 48
        case .p521: return 66
        }
    }

    /// The group order n, big-endian, `coordinateBytes` long: r and s must lie in [1, n-1].
    public var order: [UInt8] {
        switch self {
        case .p256: return Hex.decode(Array("ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551".utf8)) ?? []
        case .p384: return Hex.decode(Array(("ffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf"
                                             + "581a0db248b0a77aecec196accc52973").utf8)) ?? []
        case .p521: return Hex.decode(Array(("01fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"
                                             + "ffa51868783bf2f966b7fcc0148f709a5d03bb5c9b8899c47aebb6fb71e91386409").utf8)) ?? []
        }
    }

    public static func fromGroupName(_ name: String) -> ECCurve? {
        switch name {
        case "prime256v1", "P-256", "secp256r1": return .p256
        case "secp384r1", "P-384": return .p384
        case "secp521r1", "P-521": return .p521
        default: return nil
        }
    }
}
