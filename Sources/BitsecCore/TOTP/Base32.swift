/// RFC 4648 base32 (the alphabet `A-Z2-7`), as authenticator apps use for TOTP secrets.
///
/// Decoding is case-insensitive and padding is optional; when `=` padding is present it must
/// be exactly what RFC 4648 prescribes for the length. Nothing else is accepted (no spaces,
/// no hyphens): a secret is data, not user input to tidy up. Errors name the offset and the
/// rule broken, never the secret's characters.
public enum Base32 {
    private static let alphabet: [UInt8] = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567".utf8)

    /// Encodes without padding (the form authenticator apps and otpauth URIs use).
    public static func encode<C: Collection>(_ data: C, padded: Bool = false) -> [UInt8] where C.Element == UInt8 {
        var out: [UInt8] = []
        out.reserveCapacity((data.count * 8 + 4) / 5 + 8)
        var buffer: UInt32 = 0
        var bits = 0
        for b in data {
            buffer = (buffer << 8) | UInt32(b)
            bits += 8
            while bits >= 5 {
                out.append(alphabet[Int((buffer >> UInt32(bits - 5)) & 31)])
                bits -= 5
            }
            buffer &= (1 << UInt32(bits)) - 1
        }
        if bits > 0 { out.append(alphabet[Int((buffer << UInt32(5 - bits)) & 31)]) }
        if padded { while out.count % 8 != 0 { out.append(UInt8(ascii: "=")) } }
        return out
    }

    @inline(__always)
    private static func value(_ c: UInt8) -> UInt32? {
        switch c {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"): return UInt32(c - UInt8(ascii: "A"))
        case UInt8(ascii: "a")...UInt8(ascii: "z"): return UInt32(c - UInt8(ascii: "a"))
        case UInt8(ascii: "2")...UInt8(ascii: "7"): return UInt32(c - UInt8(ascii: "2") + 26)
        default: return nil
        }
    }

    /// Decodes `text`; throws `malformed` with a message that never echoes the input.
    /// The result is the caller's to wipe.
    public static func decode(_ text: UnsafeRawBufferPointer, what: String = "secret") throws(BitsecError) -> [UInt8] {
        let s = text.bindMemory(to: UInt8.self)
        var n = s.count
        // Strip the padding, then check that it was the right amount.
        var pad = 0
        while n > 0 && s[n - 1] == UInt8(ascii: "=") { n -= 1; pad += 1 }
        guard n > 0 else { throw .malformed("\(what) is not valid base32: empty") }
        switch n % 8 {
        case 1, 3, 6: throw .malformed("\(what) is not valid base32: \(n) characters is not a possible base32 length")
        default: break
        }
        if pad > 0 {
            guard (n + pad) % 8 == 0, pad < 8 else {
                throw .malformed("\(what) is not valid base32: wrong amount of '=' padding")
            }
        }
        var out: [UInt8] = []
        out.reserveCapacity(n * 5 / 8)
        var buffer: UInt32 = 0
        var bits = 0
        for i in 0..<n {
            guard let v = value(s[i]) else {
                if s[i] == UInt8(ascii: "=") {
                    throw .malformed("\(what) is not valid base32: '=' padding before the end (offset \(i))")
                }
                throw .malformed("\(what) is not valid base32: the character at offset \(i) is not in the RFC 4648 alphabet")
            }
            buffer = ((buffer << 5) | v) & 0x1FFF
            bits += 5
            if bits >= 8 {
                out.append(UInt8(truncatingIfNeeded: buffer >> UInt32(bits - 8)))
                bits -= 8
            }
        }
        buffer = 0
        return out
    }
}
