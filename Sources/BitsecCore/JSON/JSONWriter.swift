/// Serialises JSON into a byte array: compact, members in the given order, strings escaped
/// so the output is valid UTF-8 JSON whatever the input.
public struct JSONWriter {
    public private(set) var bytes: [UInt8] = []

    public init(reserving n: Int = 256) { bytes.reserveCapacity(n) }

    public static func serialize(_ v: JSONValue) -> [UInt8] {
        var w = JSONWriter()
        w.write(v)
        return w.bytes
    }

    public mutating func write(_ v: JSONValue) {
        switch v {
        case .null: raw("null")
        case .bool(let b): raw(b ? "true" : "false")
        case .number(let n): writeNumber(n)
        case .string(let s): writeString(s)
        case .array(let a):
            bytes.append(UInt8(ascii: "["))
            for (k, item) in a.enumerated() {
                if k > 0 { bytes.append(UInt8(ascii: ",")) }
                write(item)
            }
            bytes.append(UInt8(ascii: "]"))
        case .object(let o):
            bytes.append(UInt8(ascii: "{"))
            for (k, m) in o.members.enumerated() {
                if k > 0 { bytes.append(UInt8(ascii: ",")) }
                writeString(m.key)
                bytes.append(UInt8(ascii: ":"))
                write(m.value)
            }
            bytes.append(UInt8(ascii: "}"))
        }
    }

    public mutating func raw(_ s: StaticString) {
        bytes.append(contentsOf: UnsafeBufferPointer(start: s.utf8Start, count: s.utf8CodeUnitCount))
    }

    public mutating func rawString(_ s: String) { bytes.append(contentsOf: s.utf8) }

    public mutating func writeNumber(_ n: JSONNumber) {
        if let i = n.int64 { bytes.append(contentsOf: String(i).utf8) }
        else if n.double.isFinite { bytes.append(contentsOf: "\(n.double)".utf8) }
        else { raw("null") }
    }

    public mutating func writeInt(_ i: Int64) { bytes.append(contentsOf: String(i).utf8) }

    private static let hex: [UInt8] = Array("0123456789abcdef".utf8)

    /// A JSON string: runs of bytes that need no escape are copied in bulk (most strings are
    /// one run), the rest escaped one by one.
    public mutating func writeString(_ s: String) {
        var s = s
        bytes.append(UInt8(ascii: "\""))
        s.withUTF8 { u in
            var start = 0
            var i = 0
            while i < u.count {
                let c = u[i]
                if c >= 0x20 && c != 0x22 && c != 0x5C && c != 0x7F {
                    i += 1
                    continue
                }
                if start < i { bytes.append(contentsOf: UnsafeBufferPointer(rebasing: u[start..<i])) }
                switch c {
                case 0x22: bytes.append(0x5C); bytes.append(0x22)
                case 0x5C: bytes.append(0x5C); bytes.append(0x5C)
                case 0x0A: bytes.append(0x5C); bytes.append(UInt8(ascii: "n"))
                case 0x0D: bytes.append(0x5C); bytes.append(UInt8(ascii: "r"))
                case 0x09: bytes.append(0x5C); bytes.append(UInt8(ascii: "t"))
                default:  // the other controls and DEL
                    bytes.append(contentsOf: [0x5C, UInt8(ascii: "u"), 0x30, 0x30, Self.hex[Int(c >> 4)], Self.hex[Int(c & 0xF)]])
                }
                i += 1
                start = i
            }
            if start < u.count { bytes.append(contentsOf: UnsafeBufferPointer(rebasing: u[start..<u.count])) }
        }
        bytes.append(UInt8(ascii: "\""))
    }
}

extension JSONValue {
    /// Compact JSON text.
    public var serialized: [UInt8] { JSONWriter.serialize(self) }
}
