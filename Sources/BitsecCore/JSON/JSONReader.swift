/// bitsec's own strict, bounded JSON reader (RFC 8259), over raw bytes, no Foundation.
///
/// - Size: the document is refused with `tooLarge` beyond `maxBytes`, before parsing.
/// - Depth: arrays and objects nested deeper than `maxDepth` are refused (no recursion blow-up).
/// - Duplicate member names in one object are refused (they are a classic JWT confusion).
/// - Strings must be valid UTF-8; escapes must be valid; lone surrogates are refused.
/// - Only JSON whitespace; no comments, no trailing commas, no BOM, nothing after the value.
/// Error messages give a byte offset and what was expected, never the document's content.
public struct JSONReader {
    public struct Options: Sendable {
        public var maxBytes: Int
        public var maxDepth: Int
        public init(maxBytes: Int = Limits.maxConfigBytes, maxDepth: Int = Limits.maxJSONDepth) {
            self.maxBytes = maxBytes
            self.maxDepth = maxDepth
        }
    }

    public static func parse(_ bytes: UnsafeRawBufferPointer, options: Options = .init()) throws(BitsecError) -> JSONValue {
        guard bytes.count <= options.maxBytes else {
            throw .tooLarge("JSON document of \(bytes.count) bytes exceeds the limit of \(options.maxBytes)")
        }
        var p = Parser(bytes: bytes.bindMemory(to: UInt8.self), maxDepth: options.maxDepth)
        p.skipWhitespace()
        let v = try p.parseValue(depth: 0)
        p.skipWhitespace()
        guard p.i == p.bytes.count else { throw p.fail("unexpected data after the JSON value") }
        return v
    }

    public static func parse(_ bytes: [UInt8], options: Options = .init()) throws(BitsecError) -> JSONValue {
        try bytes.withRawBytes { (raw) throws(BitsecError) -> JSONValue in try parse(raw, options: options) }
    }

    public static func parse(_ text: String, options: Options = .init()) throws(BitsecError) -> JSONValue {
        try parse(Array(text.utf8), options: options)
    }

    /// Validates a document that must be a JSON object exactly as `parse` does (same size and
    /// depth limits, duplicate names refused at every level, UTF-8, escapes, numbers, nothing
    /// after the value) without building it: only the top-level members for which `select`
    /// returns true are materialised and handed to `member`, in document order; the rest is
    /// checked and skipped. Returns the top-level member names in document order. A document
    /// that is valid JSON but not an object is refused (`malformed`). Used on hot paths that
    /// need a few fields of a document (a token's registered claims).
    public static func scanObject(_ bytes: UnsafeBufferPointer<UInt8>, options: Options = .init(),
                                  select: (String) -> Bool,
                                  member: (String, JSONValue) -> Void) throws(BitsecError) -> [String] {
        guard bytes.count <= options.maxBytes else {
            throw .tooLarge("JSON document of \(bytes.count) bytes exceeds the limit of \(options.maxBytes)")
        }
        var p = Parser(bytes: bytes, maxDepth: options.maxDepth)
        p.skipWhitespace()
        guard p.peek() == UInt8(ascii: "{") else {
            // Same message as `parse` for what `parse` would refuse; otherwise "not an object".
            _ = try p.parseValue(depth: 0)
            throw p.fail("expected an object")
        }
        let names = try p.scanObject(depth: 1, select: select, member: member)
        p.skipWhitespace()
        guard p.i == p.bytes.count else { throw p.fail("unexpected data after the JSON value") }
        return names
    }
}

private struct Parser {
    let bytes: UnsafeBufferPointer<UInt8>
    let maxDepth: Int
    var i = 0

    init(bytes: UnsafeBufferPointer<UInt8>, maxDepth: Int) {
        self.bytes = bytes
        self.maxDepth = maxDepth
    }

    func fail(_ what: String) -> BitsecError { .malformed("invalid JSON at byte \(i): \(what)") }

    @inline(__always) mutating func skipWhitespace() {
        while i < bytes.count {
            let c = bytes[i]
            if c == 0x20 || c == 0x0A || c == 0x0D || c == 0x09 { i += 1 } else { return }
        }
    }

    @inline(__always) func peek() -> UInt8? { i < bytes.count ? bytes[i] : nil }

    mutating func expectLiteral(_ lit: StaticString, _ value: JSONValue) throws(BitsecError) -> JSONValue {
        let n = lit.utf8CodeUnitCount
        guard bytes.count - i >= n else { throw fail("truncated literal") }
        let p = lit.utf8Start
        for k in 0..<n where bytes[i + k] != p[k] { throw fail("invalid literal") }
        i += n
        return value
    }

    mutating func parseValue(depth: Int) throws(BitsecError) -> JSONValue {
        guard let c = peek() else { throw fail("unexpected end of input") }
        switch c {
        case UInt8(ascii: "{"): return try parseObject(depth: depth + 1)
        case UInt8(ascii: "["): return try parseArray(depth: depth + 1)
        case UInt8(ascii: "\""): return .string(try parseString())
        case UInt8(ascii: "t"): return try expectLiteral("true", .bool(true))
        case UInt8(ascii: "f"): return try expectLiteral("false", .bool(false))
        case UInt8(ascii: "n"): return try expectLiteral("null", .null)
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return .number(try parseNumber())
        default: throw fail("unexpected character")
        }
    }

    /// Refuses `key` when `names` already holds it: a linear scan for small objects, a set
    /// (built once, at the 16th member) beyond that.
    @inline(__always)
    func checkDuplicate(_ key: String, at keyAt: Int, _ names: [String], _ seen: inout Set<String>?) throws(BitsecError) {
        if names.count < 16 {
            for k in names where k == key { throw .malformed("invalid JSON at byte \(keyAt): duplicate member name") }
        } else {
            if seen == nil { seen = Set(names) }
            if seen?.insert(key).inserted == false { throw .malformed("invalid JSON at byte \(keyAt): duplicate member name") }
        }
    }

    mutating func parseObject(depth: Int) throws(BitsecError) -> JSONValue {
        guard depth <= maxDepth else { throw .malformed("JSON nesting exceeds the depth limit of \(maxDepth)") }
        i += 1
        var members: [(key: String, value: JSONValue)] = []
        var seen: Set<String>? = nil
        skipWhitespace()
        if peek() == UInt8(ascii: "}") { i += 1; return .object(JSONObject(members)) }
        members.reserveCapacity(8)
        while true {
            skipWhitespace()
            guard peek() == UInt8(ascii: "\"") else { throw fail("expected a member name") }
            let keyAt = i
            let key = try parseString()
            // Duplicate names are refused: linear scan for small objects, a set beyond that.
            if members.count < 16 {
                for m in members where m.key == key { throw .malformed("invalid JSON at byte \(keyAt): duplicate member name") }
            } else {
                if seen == nil { seen = Set(members.map(\.key)) }
                if seen?.insert(key).inserted == false { throw .malformed("invalid JSON at byte \(keyAt): duplicate member name") }
            }
            skipWhitespace()
            guard peek() == UInt8(ascii: ":") else { throw fail("expected ':'") }
            i += 1
            skipWhitespace()
            let v = try parseValue(depth: depth)
            members.append((key, v))
            if members.count >= 16, seen != nil { seen?.insert(key) }
            skipWhitespace()
            guard let c = peek() else { throw fail("unexpected end of input in an object") }
            i += 1
            if c == UInt8(ascii: ",") { continue }
            if c == UInt8(ascii: "}") { return .object(JSONObject(members)) }
            i -= 1
            throw fail("expected ',' or '}'")
        }
    }

    /// `parseObject` without building the object: same checks in the same order; the members
    /// `select` accepts (top level only) are parsed and passed to `member`, the rest skipped.
    /// Returns the member names.
    mutating func scanObject(depth: Int, select: (String) -> Bool, member: (String, JSONValue) -> Void) throws(BitsecError) -> [String] {
        guard depth <= maxDepth else { throw .malformed("JSON nesting exceeds the depth limit of \(maxDepth)") }
        i += 1
        var names: [String] = []
        var seen: Set<String>? = nil
        skipWhitespace()
        if peek() == UInt8(ascii: "}") { i += 1; return names }
        names.reserveCapacity(16)
        while true {
            skipWhitespace()
            guard peek() == UInt8(ascii: "\"") else { throw fail("expected a member name") }
            let keyAt = i
            let key = try parseString()
            try checkDuplicate(key, at: keyAt, names, &seen)
            skipWhitespace()
            guard peek() == UInt8(ascii: ":") else { throw fail("expected ':'") }
            i += 1
            skipWhitespace()
            if select(key) {
                member(key, try parseValue(depth: depth))
            } else {
                try skipValue(depth: depth)
            }
            names.append(key)
            if names.count > 16, seen != nil { seen?.insert(key) }
            skipWhitespace()
            guard let c = peek() else { throw fail("unexpected end of input in an object") }
            i += 1
            if c == UInt8(ascii: ",") { continue }
            if c == UInt8(ascii: "}") { return names }
            i -= 1
            throw fail("expected ',' or '}'")
        }
    }

    /// `parseValue` without building the value (same checks, same order, same messages).
    mutating func skipValue(depth: Int) throws(BitsecError) {
        guard let c = peek() else { throw fail("unexpected end of input") }
        switch c {
        case UInt8(ascii: "{"): try skipObject(depth: depth + 1)
        case UInt8(ascii: "["): try skipArray(depth: depth + 1)
        case UInt8(ascii: "\""): try skipString()
        case UInt8(ascii: "t"): _ = try expectLiteral("true", .null)
        case UInt8(ascii: "f"): _ = try expectLiteral("false", .null)
        case UInt8(ascii: "n"): _ = try expectLiteral("null", .null)
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): _ = try parseNumber()
        default: throw fail("unexpected character")
        }
    }

    mutating func skipObject(depth: Int) throws(BitsecError) {
        // The member names are still read: duplicates are refused at every level.
        _ = try scanObject(depth: depth, select: { _ in false }, member: { _, _ in })
    }

    mutating func skipArray(depth: Int) throws(BitsecError) {
        guard depth <= maxDepth else { throw .malformed("JSON nesting exceeds the depth limit of \(maxDepth)") }
        i += 1
        skipWhitespace()
        if peek() == UInt8(ascii: "]") { i += 1; return }
        while true {
            skipWhitespace()
            try skipValue(depth: depth)
            skipWhitespace()
            guard let c = peek() else { throw fail("unexpected end of input in an array") }
            i += 1
            if c == UInt8(ascii: ",") { continue }
            if c == UInt8(ascii: "]") { return }
            i -= 1
            throw fail("expected ',' or ']'")
        }
    }

    /// `parseString` without building the string: escape-free strings are only checked
    /// (control characters, UTF-8 when a byte is not ASCII); a string with an escape goes
    /// through `parseString` itself.
    mutating func skipString() throws(BitsecError) {
        let quote = i
        i += 1
        let start = i
        var high: UInt8 = 0
        while i < bytes.count {
            let c = bytes[i]
            if c == UInt8(ascii: "\"") {
                if high >= 0x80 {
                    guard UTF8Validation.isValid(UnsafeBufferPointer(rebasing: bytes[start..<i])) else {
                        throw .malformed("invalid JSON at byte \(start): string is not valid UTF-8")
                    }
                }
                i += 1
                return
            }
            if c == UInt8(ascii: "\\") { i = quote; _ = try parseString(); return }
            if c < 0x20 { throw fail("control character in a string") }
            high |= c
            i += 1
        }
        // Unterminated: let parseString report it exactly as `parse` does.
        i = quote
        _ = try parseString()
    }

    mutating func parseArray(depth: Int) throws(BitsecError) -> JSONValue {
        guard depth <= maxDepth else { throw .malformed("JSON nesting exceeds the depth limit of \(maxDepth)") }
        i += 1
        var items: [JSONValue] = []
        skipWhitespace()
        if peek() == UInt8(ascii: "]") { i += 1; return .array(items) }
        items.reserveCapacity(4)
        while true {
            skipWhitespace()
            items.append(try parseValue(depth: depth))
            skipWhitespace()
            guard let c = peek() else { throw fail("unexpected end of input in an array") }
            i += 1
            if c == UInt8(ascii: ",") { continue }
            if c == UInt8(ascii: "]") { return .array(items) }
            i -= 1
            throw fail("expected ',' or ']'")
        }
    }

    mutating func parseNumber() throws(BitsecError) -> JSONNumber {
        let start = i
        var isInteger = true
        if peek() == UInt8(ascii: "-") { i += 1 }
        guard let first = peek(), first >= 0x30, first <= 0x39 else { throw fail("invalid number") }
        if first == 0x30 {
            i += 1
            if let d = peek(), d >= 0x30, d <= 0x39 { throw fail("leading zero in a number") }
        } else {
            while let d = peek(), d >= 0x30, d <= 0x39 { i += 1 }
        }
        if peek() == UInt8(ascii: ".") {
            isInteger = false
            i += 1
            guard let d = peek(), d >= 0x30, d <= 0x39 else { throw fail("digit expected after '.'") }
            while let d = peek(), d >= 0x30, d <= 0x39 { i += 1 }
        }
        if let e = peek(), e == UInt8(ascii: "e") || e == UInt8(ascii: "E") {
            isInteger = false
            i += 1
            if let s = peek(), s == UInt8(ascii: "+") || s == UInt8(ascii: "-") { i += 1 }
            guard let d = peek(), d >= 0x30, d <= 0x39 else { throw fail("digit expected in exponent") }
            while let d = peek(), d >= 0x30, d <= 0x39 { i += 1 }
        }
        guard i - start <= 64 else { throw fail("number literal too long") }
        if isInteger {
            var negative = false
            var k = start
            if bytes[k] == UInt8(ascii: "-") { negative = true; k += 1 }
            var v: Int64 = 0
            var overflow = false
            while k < i {
                let digit = Int64(bytes[k] &- 0x30)
                let (m, o1) = v.multipliedReportingOverflow(by: 10)
                let (a, o2) = negative ? m.subtractingReportingOverflow(digit) : m.addingReportingOverflow(digit)
                if o1 || o2 { overflow = true; break }
                v = a
                k += 1
            }
            if !overflow { return JSONNumber(int64: v) }
        }
        let text = String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<i]), as: UTF8.self)
        guard let d = Double(text), d.isFinite else { throw fail("number out of range") }
        return JSONNumber(double: d)
    }

    mutating func parseHex4() throws(BitsecError) -> UInt32 {
        guard bytes.count - i >= 4 else { throw fail("truncated \\u escape") }
        var v: UInt32 = 0
        for _ in 0..<4 {
            let c = bytes[i]
            let d: UInt32
            switch c {
            case 0x30...0x39: d = UInt32(c - 0x30)
            case 0x41...0x46: d = UInt32(c - 0x41 + 10)
            case 0x61...0x66: d = UInt32(c - 0x61 + 10)
            default: throw fail("invalid \\u escape")
            }
            v = v << 4 | d
            i += 1
        }
        return v
    }

    /// Parses a string starting at the opening quote; validates UTF-8 and escapes.
    mutating func parseString() throws(BitsecError) -> String {
        i += 1
        let start = i
        // Fast path: no escapes. An all-ASCII string (the common case) needs no UTF-8 check.
        var high: UInt8 = 0
        while i < bytes.count {
            let c = bytes[i]
            if c == UInt8(ascii: "\"") {
                let slice = UnsafeBufferPointer(rebasing: bytes[start..<i])
                if high >= 0x80 {
                    guard UTF8Validation.isValid(slice) else { throw .malformed("invalid JSON at byte \(start): string is not valid UTF-8") }
                }
                i += 1
                return String(decoding: slice, as: UTF8.self)
            }
            if c == UInt8(ascii: "\\") { break }
            if c < 0x20 { throw fail("control character in a string") }
            high |= c
            i += 1
        }
        // Slow path with escapes.
        var out = [UInt8](UnsafeBufferPointer(rebasing: bytes[start..<i]))
        while true {
            guard i < bytes.count else { throw fail("unterminated string") }
            let c = bytes[i]
            if c == UInt8(ascii: "\"") {
                i += 1
                guard UTF8Validation.isValid(out) else { throw .malformed("invalid JSON at byte \(start): string is not valid UTF-8") }
                return String(decoding: out, as: UTF8.self)
            }
            if c < 0x20 { throw fail("control character in a string") }
            if c != UInt8(ascii: "\\") { out.append(c); i += 1; continue }
            i += 1
            guard i < bytes.count else { throw fail("truncated escape") }
            let e = bytes[i]
            i += 1
            switch e {
            case UInt8(ascii: "\""): out.append(0x22)
            case UInt8(ascii: "\\"): out.append(0x5C)
            case UInt8(ascii: "/"): out.append(0x2F)
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0C)
            case UInt8(ascii: "n"): out.append(0x0A)
            case UInt8(ascii: "r"): out.append(0x0D)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "u"):
                var scalar = try parseHex4()
                if scalar >= 0xD800 && scalar <= 0xDBFF {
                    guard bytes.count - i >= 6, bytes[i] == UInt8(ascii: "\\"), bytes[i + 1] == UInt8(ascii: "u") else {
                        throw fail("lone high surrogate")
                    }
                    i += 2
                    let low = try parseHex4()
                    guard low >= 0xDC00 && low <= 0xDFFF else { throw fail("invalid surrogate pair") }
                    scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                } else if scalar >= 0xDC00 && scalar <= 0xDFFF {
                    throw fail("lone low surrogate")
                }
                guard let u = Unicode.Scalar(scalar) else { throw fail("invalid code point") }
                out.append(contentsOf: UTF8.encode(u) ?? UTF8.EncodedScalar())
            default:
                throw fail("invalid escape")
            }
        }
    }
}

/// Strict UTF-8 validation (no overlongs, no surrogates, nothing above U+10FFFF).
public enum UTF8Validation {
    public static func isValid<C: Collection>(_ s: C) -> Bool where C.Element == UInt8, C.Index == Int {
        var i = s.startIndex
        let end = s.endIndex
        while i < end {
            let c = s[i]
            if c < 0x80 { i += 1; continue }
            var need = 0
            var min: UInt32 = 0
            var cp: UInt32 = 0
            if c & 0xE0 == 0xC0 { need = 1; min = 0x80; cp = UInt32(c & 0x1F) }
            else if c & 0xF0 == 0xE0 { need = 2; min = 0x800; cp = UInt32(c & 0x0F) }
            else if c & 0xF8 == 0xF0 { need = 3; min = 0x10000; cp = UInt32(c & 0x07) }
            else { return false }
            guard end - i > need else { return false }
            for k in 1...need {
                let cc = s[i + k]
                guard cc & 0xC0 == 0x80 else { return false }
                cp = cp << 6 | UInt32(cc & 0x3F)
            }
            if cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF) { return false }
            i += need + 1
        }
        return true
    }
}
