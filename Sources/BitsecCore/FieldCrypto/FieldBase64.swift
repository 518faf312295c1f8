/// URL-safe base64 without padding over raw buffers, for the text form of field tokens: no
/// intermediate arrays on the hot path. Decoding is strict (URL alphabet only, no padding,
/// canonical trailing bits), so every token has exactly one text form.
///
/// Speed matters here (the text form is the default and a 1 KiB field is ~1.4 KB of text):
/// encoding maps 12 bits to two characters with one lookup in a 4096-entry table; decoding
/// ORs four pre-shifted 32-bit table entries, where an invalid character sets bit 31.
enum FieldBase64 {
    private static let alphabet: [UInt8] = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8)

    /// 12 bits -> two characters (little-endian UInt16: first character in the low byte).
    private static let pairs: [UInt16] = (0..<4096).map { v in
        UInt16(alphabet[v >> 6]) | UInt16(alphabet[v & 63]) << 8
    }

    /// Character -> 6-bit value shifted into place for position k of a 4-character group
    /// (k = 0: bits 18...23); 0x8000_0000 for characters outside the alphabet.
    private static let dec: [[UInt32]] = (0..<4).map { k in
        var t = [UInt32](repeating: 0x8000_0000, count: 256)
        for (i, c) in alphabet.enumerated() { t[Int(c)] = UInt32(i) << UInt32(18 - 6 * k) }
        return t
    }
    private static let d0 = dec[0], d1 = dec[1], d2 = dec[2], d3 = dec[3]

    @inline(__always)
    static func encodedLength(_ n: Int) -> Int { (n / 3) * 4 + [0, 2, 3][n % 3] }

    /// The decoded size of `n` characters, or nil when no input has that length (n % 4 == 1).
    @inline(__always)
    static func decodedLength(_ n: Int) -> Int? {
        switch n % 4 {
        case 0: return n / 4 * 3
        case 2: return n / 4 * 3 + 1
        case 3: return n / 4 * 3 + 2
        default: return nil
        }
    }

    /// Encodes `src` into `dst` (which holds at least `encodedLength(src.count)` bytes).
    static func encode(_ src: UnsafeRawBufferPointer, into dst: UnsafeMutableRawBufferPointer) {
        guard let s = src.baseAddress?.assumingMemoryBound(to: UInt8.self), let d = dst.baseAddress else { return }
        pairs.withUnsafeBufferPointer { pp in
            guard let p = pp.baseAddress else { return }
            let n = src.count
            var i = 0, o = 0
            while i + 3 <= n {
                let v = Int(s[i]) << 16 | Int(s[i + 1]) << 8 | Int(s[i + 2])
                let w = UInt32(p[v >> 12]) | UInt32(p[v & 0xFFF]) << 16
                (d + o).storeBytes(of: w.littleEndian, as: UInt32.self)
                i += 3; o += 4
            }
            if n - i == 1 {
                let v = Int(s[i]) << 16
                (d + o).storeBytes(of: p[v >> 12].littleEndian, as: UInt16.self)
            } else if n - i == 2 {
                let v = Int(s[i]) << 16 | Int(s[i + 1]) << 8
                (d + o).storeBytes(of: p[v >> 12].littleEndian, as: UInt16.self)
                (d + o + 2).storeBytes(of: UInt8(truncatingIfNeeded: p[v & 0xFFF]), as: UInt8.self)
            }
        }
    }

    /// Decodes `src` into `dst` (at least `decodedLength(src.count)` bytes); false when the
    /// input is not canonical unpadded base64url.
    static func decode(_ src: UnsafeRawBufferPointer, into dst: UnsafeMutableRawBufferPointer) -> Bool {
        guard let outLen = decodedLength(src.count), dst.count >= outLen else { return false }
        if src.count == 0 { return true }
        guard let s = src.baseAddress?.assumingMemoryBound(to: UInt8.self),
              let d = dst.baseAddress?.assumingMemoryBound(to: UInt8.self) else { return false }
        return d0.withUnsafeBufferPointer { t0 in d1.withUnsafeBufferPointer { t1 in
            d2.withUnsafeBufferPointer { t2 in d3.withUnsafeBufferPointer { t3 -> Bool in
                let n = src.count
                var i = 0, o = 0
                var bad: UInt32 = 0
                while i + 4 <= n {
                    let v = t0[Int(s[i])] | t1[Int(s[i + 1])] | t2[Int(s[i + 2])] | t3[Int(s[i + 3])]
                    bad |= v
                    d[o] = UInt8(truncatingIfNeeded: v >> 16)
                    d[o + 1] = UInt8(truncatingIfNeeded: v >> 8)
                    d[o + 2] = UInt8(truncatingIfNeeded: v)
                    i += 4; o += 3
                }
                let rest = n - i
                if rest == 2 {
                    let v = t0[Int(s[i])] | t1[Int(s[i + 1])]
                    bad |= v | (v & 0xFFFF != 0 ? 0x8000_0000 : 0)  // leftover bits must be zero (canonical)
                    d[o] = UInt8(truncatingIfNeeded: v >> 16)
                } else if rest == 3 {
                    let v = t0[Int(s[i])] | t1[Int(s[i + 1])] | t2[Int(s[i + 2])]
                    bad |= v | (v & 0xFF != 0 ? 0x8000_0000 : 0)
                    d[o] = UInt8(truncatingIfNeeded: v >> 16)
                    d[o + 1] = UInt8(truncatingIfNeeded: v >> 8)
                }
                return bad & 0x8000_0000 == 0
            } }
        } }
    }
}
