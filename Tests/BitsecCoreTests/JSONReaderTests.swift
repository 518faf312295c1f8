import Testing
import BitsecCore

@Suite struct JSONReaderTests {
    func parse(_ s: String, depth: Int = 64, max: Int = 1 << 20) throws -> JSONValue {
        try JSONReader.parse(s, options: .init(maxBytes: max, maxDepth: depth))
    }

    func expectMalformed(_ s: String, _ fragment: String, sourceLocation: SourceLocation = #_sourceLocation) {
        do {
            _ = try parse(s)
            Issue.record("accepted invalid JSON \(s.debugDescription)", sourceLocation: sourceLocation)
        } catch let e as BitsecError {
            #expect(e.status == .malformed, sourceLocation: sourceLocation)
            #expect(e.detail.contains(fragment), "detail was \(e.detail)", sourceLocation: sourceLocation)
        } catch {
            Issue.record("unexpected error \(error)", sourceLocation: sourceLocation)
        }
    }

    @Test func parsesEveryValueKind() throws {
        let v = try parse(#" { "a": [1, -2, 3.5, 1e3, true, false, null], "b": {"c": "d\u00e9\n"} } "#)
        let a = try #require(v["a"]?.arrayValue)
        #expect(a[0].int64Value == 1)
        #expect(a[1].int64Value == -2)
        #expect(a[2].numberValue?.double == 3.5)
        #expect(a[2].int64Value == nil)
        #expect(a[3].int64Value == 1000)
        #expect(a[4] == .bool(true) && a[5] == .bool(false) && a[6] == .null)
        #expect(v["b"]?["c"]?.stringValue == "dé\n")
        #expect(try parse("\"x\"") == .string("x"))
        #expect(try parse("0") == .number(JSONNumber(int64: 0)))
    }

    @Test func int64BoundsAreExact() throws {
        #expect(try parse("9223372036854775807").int64Value == Int64.max)
        #expect(try parse("-9223372036854775808").int64Value == Int64.min)
        // One past the range is a double, not a wrapped integer.
        let big = try parse("9223372036854775808")
        #expect(big.int64Value == nil || big.int64Value == Int64.max)
        #expect(big.numberValue?.double == 9223372036854775808.0)
    }

    @Test func surrogatePairsAndEscapes() throws {
        #expect(try parse(#""\ud83d\ude00""#) == .string("😀"))
        #expect(try parse(#""\"\\\/\b\f\n\r\t""#) == .string("\"\\/\u{8}\u{c}\n\r\t"))
        expectMalformed(#""\ud83d""#, "surrogate")
        expectMalformed(#""\ude00""#, "surrogate")
        expectMalformed(#""\x""#, "escape")
        expectMalformed(#""\u12""#, "escape")
    }

    @Test func rejectsDuplicateMemberNames() {
        expectMalformed(#"{"alg":"RS256","alg":"none"}"#, "duplicate member name")
        // Beyond the linear-scan threshold, too.
        var members = (0..<40).map { "\"k\($0)\":\($0)" }
        members.append("\"k7\":1")
        expectMalformed("{" + members.joined(separator: ",") + "}", "duplicate member name")
    }

    @Test func enforcesDepthLimit() throws {
        _ = try parse(String(repeating: "[", count: 64) + String(repeating: "]", count: 64), depth: 64)
        expectMalformed(String(repeating: "[", count: 65) + String(repeating: "]", count: 65), "depth")
        // 10,000-deep nesting fails fast on the limit, without recursing 10,000 frames.
        expectMalformed(String(repeating: "[", count: 10_000), "depth")
        expectMalformed(String(repeating: "{\"a\":", count: 10_000), "depth")
    }

    @Test func enforcesSizeLimit() {
        #expect(throws: BitsecError.self) { _ = try parse(String(repeating: " ", count: 101) + "1", max: 100) }
        do { _ = try parse("[" + String(repeating: "1,", count: 100) + "1]", max: 100) } catch let e as BitsecError {
            #expect(e.status == .tooLarge)
        } catch { Issue.record("\(error)") }
    }

    @Test func rejectsInvalidUTF8() throws {
        for bad: [UInt8] in [[0x22, 0xFF, 0x22], [0x22, 0xC0, 0xAF, 0x22], [0x22, 0xED, 0xA0, 0x80, 0x22],
                             [0x22, 0xF4, 0x90, 0x80, 0x80, 0x22], [0x22, 0xE2, 0x82, 0x22]] {
            #expect(throws: BitsecError.self) { _ = try JSONReader.parse(bad) }
        }
        #expect(try JSONReader.parse([0x22, 0xE2, 0x82, 0xAC, 0x22]) == .string("€"))
    }

    @Test func rejectsNonJSON() {
        expectMalformed("", "end of input")
        expectMalformed("{", "member name")
        expectMalformed("{\"a\":1,}", "member name")
        expectMalformed("[1,]", "unexpected character")
        expectMalformed("[1 2]", "expected ','")
        expectMalformed("01", "leading zero")
        expectMalformed("1.", "digit")
        expectMalformed("-", "number")
        expectMalformed("1e", "exponent")
        expectMalformed("tru", "literal")
        expectMalformed("nul", "literal")
        expectMalformed("{} {}", "after the JSON value")
        expectMalformed("\u{FEFF}{}", "unexpected character")
        expectMalformed("\"a\u{01}b\"", "control character")
        expectMalformed("// c\n{}", "unexpected character")
        expectMalformed("NaN", "unexpected character")
        expectMalformed("\"abc", "unterminated")
    }

    @Test func truncatedDocumentsNeverCrash() throws {
        let doc = Array(#"{"a":[1,2,{"b":"c\u00e9\ud83d\ude00"}],"d":-1.5e-3,"e":null,"f":true}"#.utf8)
        _ = try JSONReader.parse(doc)
        for n in 0..<doc.count {
            #expect(throws: BitsecError.self) { _ = try JSONReader.parse(Array(doc[0..<n])) }
        }
    }

    @Test func writerRoundTrips() throws {
        let text = #"{"a":[1,-2,3.5,true,false,null],"b":{"c":"q\"\\\n\t\u0001é😀"}}"#
        let v = try parse(text)
        let again = try JSONReader.parse(v.serialized)
        #expect(again == v)
        #expect(String(decoding: JSONWriter.serialize(.string("\u{1}")), as: UTF8.self) == #""\u0001""#)
    }
}

@Suite struct Base64Tests {
    @Test func strictURLDecoding() {
        #expect(Base64.decodeURLStrict(Array("aGVsbG8".utf8)) == Array("hello".utf8))
        #expect(Base64.decodeURLStrict(Array("aGVsbG8=".utf8)) == nil)   // padding refused
        #expect(Base64.decodeURLStrict(Array("a+8".utf8)) == nil)        // '+' refused
        #expect(Base64.decodeURLStrict(Array("a/8".utf8)) == nil)        // '/' refused
        #expect(Base64.decodeURLStrict(Array("aGVsbG9".utf8)) == nil)    // non-canonical trailing bits
        #expect(Base64.decodeURLStrict(Array("a".utf8)) == nil)          // impossible length
        #expect(Base64.decodeURLStrict(Array("".utf8)) == [])
    }

    @Test func roundTripsEveryLength() {
        for n in 0..<70 {
            let data = (0..<n).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ 11) }
            #expect(Base64.decodeURLStrict(Base64.encode(data)) == data)
            #expect(Base64.decodeLenient(Base64.encode(data, urlSafe: false, padded: true), urlSafe: false) == data)
        }
    }

    @Test func hex() {
        #expect(Hex.encode([0, 0xAB, 0xFF]) == "00abff")
        #expect(Hex.decode(Array("00ABff".utf8)) == [0, 0xAB, 0xFF])
        #expect(Hex.decode(Array("0".utf8)) == nil)
        #expect(Hex.decode(Array("zz".utf8)) == nil)
    }
}
