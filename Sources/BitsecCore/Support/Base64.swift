/// Base64 (RFC 4648) without Foundation. `decodeURLStrict` is the JOSE form: URL alphabet,
/// no padding, no whitespace, and non-canonical trailing bits refused.
public enum Base64 {
    private static let std: [UInt8] = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
    private static let url: [UInt8] = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8)

    /// 0...63 for alphabet characters, 0xFF otherwise; one table per alphabet.
    private static let urlTable: [UInt8] = table(url)
    private static let stdTable: [UInt8] = table(std)

    private static func table(_ alphabet: [UInt8]) -> [UInt8] {
        var t = [UInt8](repeating: 0xFF, count: 256)
        for (i, c) in alphabet.enumerated() { t[Int(c)] = UInt8(i) }
        return t
    }

    public static func encodedLength(_ n: Int, padded: Bool) -> Int {
        padded ? (n + 2) / 3 * 4 : (n * 4 + 2) / 3
    }

    public static func encode<C: Collection>(_ data: C, urlSafe: Bool = true, padded: Bool = false) -> [UInt8] where C.Element == UInt8 {
        var out = [UInt8]()
        encode(data, into: &out, urlSafe: urlSafe, padded: padded)
        return out
    }

    public static func encode<C: Collection>(_ data: C, into out: inout [UInt8], urlSafe: Bool = true, padded: Bool = false) where C.Element == UInt8 {
        let a = urlSafe ? url : std
        out.reserveCapacity(out.count + encodedLength(data.count, padded: padded))
        var it = data.makeIterator()
        while let b0 = it.next() {
            let b1 = it.next()
            let b2 = b1 == nil ? nil : it.next()
            out.append(a[Int(b0 >> 2)])
            out.append(a[Int((b0 & 0x03) << 4 | (b1 ?? 0) >> 4)])
            if let b1 {
                out.append(a[Int((b1 & 0x0F) << 2 | (b2 ?? 0) >> 6)])
                if let b2 { out.append(a[Int(b2 & 0x3F)]) } else if padded { out.append(UInt8(ascii: "=")) }
            } else if padded {
                out.append(UInt8(ascii: "=")); out.append(UInt8(ascii: "="))
            }
        }
    }

    public static func encodeString<C: Collection>(_ data: C, urlSafe: Bool = true, padded: Bool = false) -> String where C.Element == UInt8 {
        String(decoding: encode(data, urlSafe: urlSafe, padded: padded), as: UTF8.self)
    }

    /// Strict base64url: URL alphabet, no padding, canonical trailing bits. nil if invalid.
    public static func decodeURLStrict(_ s: UnsafeBufferPointer<UInt8>) -> [UInt8]? {
        decode(s, table: urlTable, allowPadding: false)
    }

    public static func decodeURLStrict<C: Collection>(_ s: C) -> [UInt8]? where C.Element == UInt8 {
        let a = Array(s)
        return a.withUnsafeBufferPointer { decode($0, table: urlTable, allowPadding: false) }
    }

    /// Strict standard base64 (`+`, `/`), no padding, canonical trailing bits (PHC strings). nil if invalid.
    public static func decodeStdStrict<C: Collection>(_ s: C) -> [UInt8]? where C.Element == UInt8 {
        let a = Array(s)
        return a.withUnsafeBufferPointer { decode($0, table: stdTable, allowPadding: false) }
    }

    /// Padding-tolerant decode in either alphabet (configuration values, Fernet keys).
    public static func decodeLenient<C: Collection>(_ s: C, urlSafe: Bool) -> [UInt8]? where C.Element == UInt8 {
        let a = Array(s)
        return a.withUnsafeBufferPointer { decode($0, table: urlSafe ? urlTable : stdTable, allowPadding: true) }
    }

    private static func decode(_ s: UnsafeBufferPointer<UInt8>, table: [UInt8], allowPadding: Bool) -> [UInt8]? {
        var n = s.count
        if allowPadding {
            var pads = 0
            while n > 0 && s[n - 1] == UInt8(ascii: "=") && pads < 2 { n -= 1; pads += 1 }
            if pads > 0 && s.count % 4 != 0 { return nil }
        }
        if n % 4 == 1 { return nil }
        // Four characters (24 bits) at a time into an uninitialised array; an invalid
        // character has table value 0xFF, so any bit above 0x3F in the OR means "refuse".
        let rem = n % 4
        let outLen = n / 4 * 3 + (rem == 0 ? 0 : rem - 1)
        var bad: UInt32 = 0
        let out = table.withUnsafeBufferPointer { t in
            [UInt8](unsafeUninitializedCapacity: outLen) { o, count in
                var k = 0, w = 0
                while k + 4 <= n {
                    let a = UInt32(t[Int(s[k])]), b = UInt32(t[Int(s[k + 1])])
                    let c = UInt32(t[Int(s[k + 2])]), d = UInt32(t[Int(s[k + 3])])
                    bad |= a | b | c | d
                    let v = a << 18 | b << 12 | c << 6 | d
                    o[w] = UInt8(truncatingIfNeeded: v >> 16)
                    o[w + 1] = UInt8(truncatingIfNeeded: v >> 8)
                    o[w + 2] = UInt8(truncatingIfNeeded: v)
                    k += 4; w += 3
                }
                if rem == 2 {
                    let a = UInt32(t[Int(s[k])]), b = UInt32(t[Int(s[k + 1])])
                    bad |= a | b
                    // Non-canonical encodings (leftover bits set) are refused.
                    if b & 0x0F != 0 { bad |= 0x100 }
                    o[w] = UInt8(truncatingIfNeeded: a << 2 | b >> 4)
                    w += 1
                } else if rem == 3 {
                    let a = UInt32(t[Int(s[k])]), b = UInt32(t[Int(s[k + 1])]), c = UInt32(t[Int(s[k + 2])])
                    bad |= a | b | c
                    if c & 0x03 != 0 { bad |= 0x100 }
                    o[w] = UInt8(truncatingIfNeeded: a << 2 | b >> 4)
                    o[w + 1] = UInt8(truncatingIfNeeded: b << 4 | c >> 2)
                    w += 2
                }
                count = w
            }
        }
        return bad & ~0x3F == 0 ? out : nil
    }
}

/// Lowercase hexadecimal.
public enum Hex {
    private static let digits: [UInt8] = Array("0123456789abcdef".utf8)

    public static func encode<C: Collection>(_ data: C) -> String where C.Element == UInt8 {
        var out = [UInt8]()
        out.reserveCapacity(data.count * 2)
        for b in data { out.append(digits[Int(b >> 4)]); out.append(digits[Int(b & 0xF)]) }
        return String(decoding: out, as: UTF8.self)
    }

    public static func decode<C: Collection>(_ s: C) -> [UInt8]? where C.Element == UInt8 {
        let a = Array(s)
        guard a.count % 2 == 0 else { return nil }
        var out = [UInt8]()
        out.reserveCapacity(a.count / 2)
        var k = 0
        while k < a.count {
            guard let h = nibble(a[k]), let l = nibble(a[k + 1]) else { return nil }
            out.append(h << 4 | l)
            k += 2
        }
        return out
    }

    private static func nibble(_ c: UInt8) -> UInt8? {
        switch c {
        case 0x30...0x39: return c - 0x30
        case 0x41...0x46: return c - 0x41 + 10
        case 0x61...0x66: return c - 0x61 + 10
        default: return nil
        }
    }
}
