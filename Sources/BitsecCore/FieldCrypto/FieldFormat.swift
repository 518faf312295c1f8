/// The bitsec field ciphertext format (version 1: AES-256-GCM, version 2: AES-256-SIV).
///
/// Binary form (all lengths in bytes; `L` = key id length, `n` = plaintext length):
///
/// ```
/// offset      size  field
/// 0           1     format version: 0x01 randomised (AES-256-GCM), 0x02 deterministic (AES-256-SIV)
/// 1           1     L, the key id length (1...32)
/// 2           L     key id, ASCII [A-Za-z0-9._-]
/// 2+L         4     context check: AES-256-ECB(check subkey, SHA-256(context)[0..<16])[0..<4]
///                   (only tells wrong_context from tampered on failure; it is covered by the tag)
/// -- version 1 (randomised) --
/// 6+L         12    nonce (random per encryption, RAND_bytes)
/// 18+L        n     ciphertext
/// 18+L+n      16    GCM tag
///   AAD = bytes[0 ..< 6+L] (the header) || context
/// -- version 2 (deterministic) --
/// 6+L         16    synthetic IV (the SIV tag, RFC 5297)
/// 22+L        n+1   ciphertext of 0x00 || plaintext (OpenSSL 3.0's AES-SIV cannot encrypt an
///                   empty message, so the payload always starts with one zero byte)
///   AAD components (S2V, in order) = [header bytes[0 ..< 6+L], context]
/// ```
///
/// Text form: the binary form in URL-safe base64 without padding (RFC 4648 §5). A binary
/// token starts with 0x01/0x02, which is not a base64url character, so decryption accepts
/// either form without a flag.
///
/// Keys: every key's material (at least 32 bytes) is only an HKDF input. The subkeys are
/// HKDF-SHA256(ikm = material, salt = "bitsec-fields-v1", info = purpose || 0x00 || key id)
/// with purpose `aead` (32 bytes, AES-256-GCM), `siv` (64 bytes, AES-256-SIV) and
/// `context-check` (32 bytes, AES-256 over SHA-256 of the context).
public enum FieldFormat {
    public static let versionGCM: UInt8 = 0x01
    public static let versionSIV: UInt8 = 0x02
    public static let maxKeyIdBytes = 32
    public static let checkBytes = 4
    public static let nonceBytes = 12
    public static let tagBytes = 16
    /// Largest plaintext accepted (BITSEC_FIELD_MAX_PLAINTEXT).
    public static let maxPlaintextBytes = 1 << 20
    /// Largest context accepted (BITSEC_FIELD_MAX_CONTEXT).
    public static let maxContextBytes = 4096
    /// HKDF salt of every subkey.
    public static let hkdfSalt: [UInt8] = Array("bitsec-fields-v1".utf8)

    /// Bytes before the body: version, id length, id, context check.
    @inline(__always)
    public static func headerLength(keyIdCount: Int) -> Int { 2 + keyIdCount + checkBytes }

    /// Binary size of a token for a plaintext of `n` bytes under a key id of `idCount` bytes.
    @inline(__always)
    public static func binaryLength(plaintext n: Int, keyIdCount: Int, deterministic: Bool) -> Int {
        headerLength(keyIdCount: keyIdCount) + (deterministic ? tagBytes + 1 + n : nonceBytes + n + tagBytes)
    }

    /// The worst-case output size for a plaintext of `n` bytes (any key id); 0 when `n`
    /// exceeds `maxPlaintextBytes` (BITSEC_FIELD_MAX_PLAINTEXT).
    public static func bound(plaintext n: Int, flags: FieldFlags) -> Int {
        guard n >= 0, n <= maxPlaintextBytes else { return 0 }
        let bin = binaryLength(plaintext: n, keyIdCount: maxKeyIdBytes, deterministic: flags.contains(.deterministic))
        return flags.contains(.binary) ? bin : FieldBase64.encodedLength(bin)
    }

    /// A valid key id: 1...32 bytes of [A-Za-z0-9._-].
    public static func isValidKeyId(_ s: String) -> Bool {
        let u = Array(s.utf8)
        guard !u.isEmpty, u.count <= maxKeyIdBytes else { return false }
        return u.allSatisfy { c in
            (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A)
                || c == 0x2E || c == 0x5F || c == 0x2D
        }
    }
}

/// Options of an encryption (BITSEC_FIELD_* flags).
public struct FieldFlags: OptionSet, Sendable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    /// Output the binary form instead of the text form.
    public static let binary = FieldFlags(rawValue: 1)
    /// Deterministic (AES-SIV) mode: equal plaintexts under the same key and context give
    /// equal tokens. Only for contexts listed in `deterministic_contexts`.
    public static let deterministic = FieldFlags(rawValue: 2)
    public static let all: FieldFlags = [.binary, .deterministic]
}

/// Why a decryption failed: a decision, not an error (BITSEC_FIELD_REASON_*).
public enum FieldReason: Int32, Sendable, CaseIterable, Error {
    case ok = 0
    /// Not a token of a known format: bad encoding, truncated, unknown version.
    case malformed = 1
    /// The tag did not verify although the context check matched: the bytes were altered.
    case tampered = 2
    /// The tag did not verify and the context check differs: the token belongs to another
    /// row, column or tenant (or was built with another context).
    case wrongContext = 3
    /// The key id is not in the keyring.
    case unknownKey = 4
    /// The key id is in the keyring with status "retired".
    case retiredKey = 5
    /// Fernet: older than the TTL.
    case expired = 6
    /// Fernet: the timestamp is more than 60 s in the future (with a TTL).
    case notYetValid = 7

    public var name: StaticString {
        switch self {
        case .ok: return "ok"
        case .malformed: return "malformed"
        case .tampered: return "tampered"
        case .wrongContext: return "wrong_context"
        case .unknownKey: return "unknown_key"
        case .retiredKey: return "retired_key"
        case .expired: return "expired"
        case .notYetValid: return "not_yet_valid"
        }
    }

    public var nameString: String { name.description }
}

/// The result of a decryption into a caller's buffer: the decision and the plaintext size.
/// When `reason != .ok` nothing was written (the buffer was wiped). When `length` exceeds
/// the buffer, nothing was decrypted: call again with a larger buffer.
public struct FieldOutcome: Sendable, Equatable {
    public var reason: FieldReason
    public var length: Int
    public init(_ reason: FieldReason, _ length: Int) { self.reason = reason; self.length = length }
    public static func failed(_ r: FieldReason) -> FieldOutcome { .init(r, 0) }
}
