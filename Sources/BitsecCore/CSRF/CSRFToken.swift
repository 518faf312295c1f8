internal import COpenSSL

/// The two token kinds. Each has its own MAC label, so a token of one kind never verifies
/// as the other.
public enum CSRFTokenKind: Sendable {
    /// Synchronizer token: bound to a server-side session identifier, kept in the session
    /// and sent back by the page in a header or form field.
    case synchronizer
    /// Signed double-submit cookie: bound to a session binding value, sent in a cookie and
    /// repeated by the page in a header or form field.
    case doubleSubmit

    var label: [UInt8] {
        switch self {
        case .synchronizer: return Array("bitsec-csrf-synchronizer-v1".utf8)
        case .doubleSubmit: return Array("bitsec-csrf-double-submit-v1".utf8)
        }
    }
}

/// The token format: base64url (no padding) of
/// `version (1) || issued_at (u64 BE seconds) || nonce (16 random bytes) || mac (32)`,
/// where `mac = HMAC-SHA256(key, label || 0x00 || SHA-256(binding) || version || issued_at || nonce)`.
/// The binding (a session identifier) enters only as its hash: the token never carries it.
public enum CSRFToken {
    public static let version: UInt8 = 1
    public static let nonceBytes = 16
    public static let macBytes = 32
    public static let rawBytes = 1 + 8 + nonceBytes + macBytes
    /// The length of every token (base64url of `rawBytes`, no padding).
    public static let tokenBytes = (rawBytes * 4 + 2) / 3
    /// The longest token the parser reads; anything longer is `malformed` without decoding.
    public static let maxTokenBytes = 256
    /// The longest session binding value accepted (bytes).
    public static let maxBindingBytes = 4096

    /// SHA-256 of the binding value.
    static func bindingHash(_ binding: UnsafeRawBufferPointer) -> [UInt8]? {
        var out = [UInt8](repeating: 0, count: 32)
        var n: UInt32 = 0
        let ok = out.withUnsafeMutableBytes { m -> Bool in
            EVP_Digest(binding.baseAddress, binding.count, m.baseAddress?.assumingMemoryBound(to: UInt8.self), &n, EVP_sha256(), nil) == 1
        }
        return ok && n == 32 ? out : nil
    }

    /// The MAC input for one token: label, separator, binding hash, then the token's own
    /// version, time and nonce (`head`: the first 25 raw bytes).
    static func macInput(kind: CSRFTokenKind, bindingHash: [UInt8], head: ArraySlice<UInt8>) -> [UInt8] {
        var m = kind.label
        m.reserveCapacity(m.count + 1 + 32 + head.count)
        m.append(0)
        m.append(contentsOf: bindingHash)
        m.append(contentsOf: head)
        return m
    }

    /// Parses a presented token: nil when it is not one (length, alphabet, version).
    static func parse(_ token: UnsafeRawBufferPointer) -> (raw: [UInt8], issuedAt: Int64)? {
        guard token.count == tokenBytes else { return nil }
        guard let raw = Base64.decodeURLStrict(token.bindMemory(to: UInt8.self)), raw.count == rawBytes, raw[0] == version else {
            return nil
        }
        var t: UInt64 = 0
        for i in 1...8 { t = (t << 8) | UInt64(raw[i]) }
        guard t <= UInt64(Int64.max) else { return nil }
        return (raw, Int64(t))
    }
}
