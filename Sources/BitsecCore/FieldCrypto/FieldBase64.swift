/// URL-safe base64 without padding over raw buffers, for the text form of field tokens: no
/// intermediate arrays on the hot path. Decoding is strict (URL alphabet only, no padding,
/// canonical trailing bits), so every token has exactly one text form.
enum FieldBase64 {
    private static let alphabet: [UInt8] = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8)
    private static let table: [UInt8] = {
        var t = [UInt8](repeating: 0xFF, count: 256)
        for (i, c) in alphabet.enumerated() { t[Int(c)] = UInt8(i) }
        return t
    }()

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
        alphabet.withUnsafeBufferPointer { a in
            let n = src.count
            var i = 0, o = 0
            while i + 3 <= n {
                let v = UInt32(src[i]) << 16 | UInt32(src[i + 1]) << 8 | UInt32(src[i + 2])
                dst[o] = a[Int(v >> 18)]
                dst[o + 1] = a[Int((v >> 12) & 63)]
                dst[o + 2] = a[Int((v >> 6) & 63)]
                dst[o + 3] = a[Int(v & 63)]
                i += 3; o += 4
            }
            if n - i == 1 {
                let v = UInt32(src[i]) << 16
                dst[o] = a[Int(v >> 18)]
                dst[o + 1] = a[Int((v >> 12) & 63)]
            } else if n - i == 2 {
                let v = UInt32(src[i]) << 16 | UInt32(src[i + 1]) << 8
                dst[o] = a[Int(v >> 18)]
                dst[o + 1] = a[Int((v >> 12) & 63)]
                dst[o + 2] = a[Int((v >> 6) & 63)]
            }
        }
    }

    /// Decodes `src` into `dst` (at least `decodedLength(src.count)` bytes); false when the
    /// input is not canonical unpadded base64url.
    static func decode(_ src: UnsafeRawBufferPointer, into dst: UnsafeMutableRawBufferPointer) -> Bool {
        guard let outLen = decodedLength(src.count), dst.count >= outLen else { return false }
        return table.withUnsafeBufferPointer { t -> Bool in
            let n = src.count
            var i = 0, o = 0
            while i + 4 <= n {
                let a = t[Int(src[i])], b = t[Int(src[i + 1])], c = t[Int(src[i + 2])], d = t[Int(src[i + 3])]
                if (a | b | c | d) & 0xC0 != 0 { return false }
                let v = UInt32(a) << 18 | UInt32(b) << 12 | UInt32(c) << 6 | UInt32(d)
                dst[o] = UInt8(truncatingIfNeeded: v >> 16)
                dst[o + 1] = UInt8(truncatingIfNeeded: v >> 8)
                dst[o + 2] = UInt8(truncatingIfNeeded: v)
                i += 4; o += 3
            }
            let rest = n - i
            if rest == 2 {
                let a = t[Int(src[i])], b = t[Int(src[i + 1])]
                if (a | b) & 0xC0 != 0 || b & 0x0F != 0 { return false }
                dst[o] = a << 2 | b >> 4
            } else if rest == 3 {
                let a = t[Int(src[i])], b = t[Int(src[i + 1])], c = t[Int(src[i + 2])]
                if (a | b | c) & 0xC0 != 0 || c & 0x03 != 0 { return false }
                dst[o] = a << 2 | b >> 4
                dst[o + 1] = (b & 0x0F) << 4 | c >> 2
            }
            return true
        }
    }
}
