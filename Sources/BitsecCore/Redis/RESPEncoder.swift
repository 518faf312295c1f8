/// Encodes Redis commands in RESP for `RedisConnection.command(resp:)`: an array of bulk
/// strings, `*<n>\r\n` then `$<len>\r\n<bytes>\r\n` per argument. No allocation beyond the
/// output array; integers are written in decimal without going through `String`.
public struct RESPEncoder: Sendable {
    public private(set) var bytes: [UInt8]

    /// Starts a command of `count` arguments (`count` further `bulk` calls must follow).
    public init(count: Int, capacity: Int = 128) {
        bytes = []
        bytes.reserveCapacity(capacity)
        bytes.append(UInt8(ascii: "*"))
        Self.appendDecimal(&bytes, Int64(count))
        bytes.append(13); bytes.append(10)
    }

    /// Starts without the `*<n>` header: for argument lists kept ready (`raw`).
    public init(headerless capacity: Int) {
        bytes = []
        bytes.reserveCapacity(capacity)
    }

    /// Appends one argument.
    @inline(__always)
    public mutating func bulk<C: Collection>(_ arg: C) where C.Element == UInt8 {
        bytes.append(UInt8(ascii: "$"))
        Self.appendDecimal(&bytes, Int64(arg.count))
        bytes.append(13); bytes.append(10)
        bytes.append(contentsOf: arg)
        bytes.append(13); bytes.append(10)
    }

    /// Appends one argument made of two parts (a prefix and a caller's key, say).
    @inline(__always)
    public mutating func bulk(_ a: [UInt8], _ b: String.UTF8View, _ c: UInt8) {
        bytes.append(UInt8(ascii: "$"))
        Self.appendDecimal(&bytes, Int64(a.count + b.count + 1))
        bytes.append(13); bytes.append(10)
        bytes.append(contentsOf: a)
        bytes.append(contentsOf: b)
        bytes.append(c)
        bytes.append(13); bytes.append(10)
    }

    /// Appends one argument: an integer in decimal.
    @inline(__always)
    public mutating func bulk(int v: Int64) {
        var digits: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8,
                     UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) =
            (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        let n = withUnsafeMutableBytes(of: &digits) { buf -> Int in Self.decimal(v, into: buf) }
        bytes.append(UInt8(ascii: "$"))
        Self.appendDecimal(&bytes, Int64(n))
        bytes.append(13); bytes.append(10)
        withUnsafeBytes(of: &digits) { bytes.append(contentsOf: $0.prefix(n)) }
        bytes.append(13); bytes.append(10)
    }

    /// Appends pre-encoded arguments (the output of another encoder's `bulk` calls).
    @inline(__always)
    public mutating func raw(_ encoded: [UInt8]) { bytes.append(contentsOf: encoded) }

    /// The encoding of arguments alone (no `*<n>` header), to keep constant ones ready.
    public static func arguments(_ args: [[UInt8]]) -> [UInt8] {
        var e = RESPEncoder(headerless: 64)
        for a in args { e.bulk(a) }
        return e.bytes
    }

    @inline(__always)
    static func appendDecimal(_ out: inout [UInt8], _ v: Int64) {
        var digits: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8,
                     UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) =
            (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        let n = withUnsafeMutableBytes(of: &digits) { buf -> Int in decimal(v, into: buf) }
        withUnsafeBytes(of: &digits) { out.append(contentsOf: $0.prefix(n)) }
    }

    /// Writes `v` in decimal at the start of `buf` (20 bytes suffice); returns the length.
    @inline(__always)
    static func decimal(_ v: Int64, into buf: UnsafeMutableRawBufferPointer) -> Int {
        var m = v.magnitude
        var tmp: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8,
                  UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) =
            (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        return withUnsafeMutableBytes(of: &tmp) { t -> Int in
            var k = 0
            repeat {
                t[k] = UInt8(ascii: "0") + UInt8(truncatingIfNeeded: m % 10)
                m /= 10
                k += 1
            } while m > 0
            var n = 0
            if v < 0 { buf[0] = UInt8(ascii: "-"); n = 1 }
            while k > 0 { k -= 1; buf[n] = t[k]; n += 1 }
            return n
        }
    }
}
