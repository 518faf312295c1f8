import Testing
import BitsecCore

/// JSONWriter's string escaping (bulk runs of plain bytes, escapes one by one) against the
/// escaping written out byte by byte, and the result read back.
@Suite struct JSONWriterTests {
    static func reference(_ s: String) -> [UInt8] {
        let hex = Array("0123456789abcdef".utf8)
        var out: [UInt8] = [0x22]
        for c in s.utf8 {
            switch c {
            case 0x22: out += [0x5C, 0x22]
            case 0x5C: out += [0x5C, 0x5C]
            case 0x0A: out += [0x5C, 0x6E]
            case 0x0D: out += [0x5C, 0x72]
            case 0x09: out += [0x5C, 0x74]
            case 0..<0x20, 0x7F: out += [0x5C, 0x75, 0x30, 0x30, hex[Int(c >> 4)], hex[Int(c & 0xF)]]
            default: out.append(c)
            }
        }
        out.append(0x22)
        return out
    }

    @Test func escapesExactlyAsByteByByte() throws {
        // every byte value in every position of short strings, and long mixed runs
        var cases: [String] = ["", "plain", "\"", "\\", "a\"b\\c\nd\re\tf", "é ü 日本 🎉", String(repeating: "x", count: 5000)]
        for b in UInt8(0)...UInt8(0x7F) {
            let u = UnicodeScalar(b)
            cases += ["\(u)", "a\(u)", "\(u)b", "ab\(u)\(u)cd", String(repeating: "\(u)", count: 3)]
        }
        var g = SystemRandomNumberGenerator()
        let alphabet: [Character] = ["a", "b", "\"", "\\", "\n", "\u{1}", "\u{7F}", "é", "🎉", " ", "\t", "\u{1F}"]
        for _ in 0..<500 {
            cases.append(String((0..<Int.random(in: 0...40, using: &g)).map { _ in alphabet.randomElement(using: &g)! }))
        }
        for s in cases {
            var w = JSONWriter()
            w.writeString(s)
            #expect(w.bytes == Self.reference(s), "\(Array(s.utf8))")
            let back = try JSONReader.parse(w.bytes)
            #expect(back == .string(s))
        }
    }
}
