/// JSON that `JSONWriter` would write back byte for byte, recognised without building a tree:
/// compact (no whitespace), strings of printable UTF-8 without escapes (no control character,
/// quote, backslash or DEL), integers in canonical form of at most 18 digits (no `-0`, no
/// fraction or exponent), `true`, `false`, `null`, objects without a repeated name and with at
/// most 32 members, nesting within `maxDepth` (the outermost object at depth 1, as the
/// reader counts). Everything else is left to the strict reader, which accepts a superset.
struct CanonicalJSON {
    let b: UnsafeBufferPointer<UInt8>
    let maxDepth: Int
    var i = 0

    init(b: UnsafeBufferPointer<UInt8>, maxDepth: Int) {
        self.b = b
        self.maxDepth = maxDepth
    }

    mutating func value(depth: Int) -> Bool {
        guard i < b.count else { return false }
        switch b[i] {
        case 0x22: return string() != nil
        case 0x7B: return object(depth: depth + 1)
        case 0x5B: return array(depth: depth + 1)
        case 0x74: return literal(0x74, 0x72, 0x75, 0x65)
        case 0x6E: return literal(0x6E, 0x75, 0x6C, 0x6C)
        case 0x66:
            guard literal(0x66, 0x61, 0x6C, 0x73), i < b.count, b[i] == 0x65 else { return false }
            i += 1
            return true
        case 0x2D, 0x30...0x39: return integer()
        default: return false
        }
    }

    private mutating func literal(_ c0: UInt8, _ c1: UInt8, _ c2: UInt8, _ c3: UInt8) -> Bool {
        guard b.count - i >= 4, b[i] == c0, b[i + 1] == c1, b[i + 2] == c2, b[i + 3] == c3 else { return false }
        i += 4
        return true
    }

    /// At a quote: the range of the string's bytes (without quotes), nil when not plain.
    private mutating func string() -> Range<Int>? {
        i += 1
        let start = i
        var ascii = true
        while i < b.count {
            let c = b[i]
            if c == 0x22 {
                let r = start..<i
                i += 1
                if !ascii && !UTF8Validation.isValid(UnsafeBufferPointer(rebasing: b[r])) { return nil }
                return r
            }
            if c < 0x20 || c == 0x5C || c == 0x7F { return nil }
            if c >= 0x80 { ascii = false }
            i += 1
        }
        return nil
    }

    private mutating func integer() -> Bool {
        var j = i
        let negative = b[j] == 0x2D
        if negative { j += 1 }
        guard j < b.count else { return false }
        let first = j
        if b[j] == 0x30 {
            j += 1
            if negative { return false }  // -0 is written back as 0
        } else {
            guard b[j] >= 0x31 && b[j] <= 0x39 else { return false }
            while j < b.count && b[j] >= 0x30 && b[j] <= 0x39 { j += 1 }
        }
        guard j - first <= 18 else { return false }
        if j < b.count && (b[j] == 0x2E || b[j] == 0x65 || b[j] == 0x45) { return false }
        i = j
        return true
    }

    private mutating func array(depth: Int) -> Bool {
        guard depth <= maxDepth else { return false }
        i += 1
        guard i < b.count else { return false }
        if b[i] == 0x5D { i += 1; return true }
        while true {
            guard value(depth: depth), i < b.count else { return false }
            if b[i] == 0x2C { i += 1; continue }
            if b[i] == 0x5D { i += 1; return true }
            return false
        }
    }

    /// At an opening brace.
    mutating func object(depth: Int) -> Bool {
        guard depth <= maxDepth, i < b.count, b[i] == 0x7B, let base = b.baseAddress else { return false }
        i += 1
        guard i < b.count else { return false }
        if b[i] == 0x7D { i += 1; return true }
        var names: [Range<Int>] = []
        while true {
            guard i < b.count, b[i] == 0x22, let name = string() else { return false }
            for other in names where other.count == name.count {
                if memcmpEqual(base + other.lowerBound, base + name.lowerBound, name.count) {
                    return false  // a repeated name: the reader refuses it, with its reason
                }
            }
            guard names.count < 32 else { return false }
            names.append(name)
            guard i < b.count, b[i] == 0x3A else { return false }
            i += 1
            guard value(depth: depth), i < b.count else { return false }
            if b[i] == 0x2C { i += 1; continue }
            if b[i] == 0x7D { i += 1; return true }
            return false
        }
    }
}

/// The common case of `EventValidator`, without building a JSON tree: a top-level object
/// whose members are known names with plain values (strings without escapes, booleans) and
/// an optional `details` object (read by the strict reader). Anything else, including every
/// error, returns nil and the event goes through the strict path, which is authoritative
/// and gives the precise reason. So this scanner only ever accepts what the strict path
/// accepts, and fills the same builder (a test checks both paths agree).
struct FastEventScanner {
    let b: UnsafeBufferPointer<UInt8>
    let maxDepth: Int
    var i = 0

    init(bytes: UnsafeBufferPointer<UInt8>, maxDepth: Int) {
        self.b = bytes
        self.maxDepth = maxDepth
    }

    struct Result {
        var builder: EventBuilder
        var type: String?
        var success: Bool?
    }

    private enum Field: Int {
        case type = 0, subtype, result, success, reason, severity, actor, tenant, ip, userAgent, sessionID,
             resource, resourceID, action, classification, sensitive, details
    }

    /// Member name -> (field, max bytes): the same names, aliases and limits as the strict path.
    private static func field(_ k: UnsafeBufferPointer<UInt8>) -> (Field, Int)? {
        func eq(_ s: StaticString) -> Bool {
            s.utf8CodeUnitCount == k.count && memcmpEqual(s.utf8Start, k.baseAddress, k.count)
        }
        switch k.count {
        case 2: if eq("ip") { return (.ip, 64) }
        case 4: if eq("type") { return (.type, 64) }
        case 5: if eq("actor") { return (.actor, 256) }
        case 6:
            if eq("result") { return (.result, 16) }
            if eq("reason") { return (.reason, 1024) }
            if eq("tenant") { return (.tenant, 256) }
            if eq("action") { return (.action, 64) }
        case 7:
            if eq("subtype") { return (.subtype, 64) }
            if eq("success") { return (.success, 0) }
            if eq("user_id") { return (.actor, 256) }
            if eq("details") { return (.details, 0) }
        case 8:
            if eq("severity") { return (.severity, 16) }
            if eq("resource") { return (.resource, 1024) }
        case 9:
            if eq("tenant_id") { return (.tenant, 256) }
            if eq("operation") { return (.action, 64) }
        case 10:
            if eq("user_agent") { return (.userAgent, 1024) }
            if eq("session_id") { return (.sessionID, 256) }
            if eq("ip_address") { return (.ip, 64) }
        case 11: if eq("resource_id") { return (.resourceID, 256) }
        case 13: if eq("event_subtype") { return (.subtype, 64) }
        case 14: if eq("failure_reason") { return (.reason, 1024) }
        case 19: if eq("data_classification") { return (.classification, 64) }
        case 23: if eq("sensitive_data_accessed") { return (.sensitive, 0) }
        default: break
        }
        return nil
    }

    @inline(__always) private mutating func ws() {
        while i < b.count, b[i] == 0x20 || b[i] == 0x0A || b[i] == 0x0D || b[i] == 0x09 { i += 1 }
    }

    /// A string without escapes or control characters: its bytes (UTF-8 checked).
    private mutating func plainString() -> UnsafeBufferPointer<UInt8>? {
        guard i < b.count, b[i] == 0x22 else { return nil }
        i += 1
        let start = i
        while i < b.count {
            let c = b[i]
            if c == 0x22 {
                let s = UnsafeBufferPointer(rebasing: b[start..<i])
                i += 1
                return UTF8Validation.isValid(s) ? s : nil
            }
            if c == 0x5C || c < 0x20 { return nil }
            i += 1
        }
        return nil
    }

    private mutating func literalBool() -> Bool? {
        if b.count - i >= 4, b[i] == 0x74, b[i + 1] == 0x72, b[i + 2] == 0x75, b[i + 3] == 0x65 { i += 4; return true }
        if b.count - i >= 5, b[i] == 0x66, b[i + 1] == 0x61, b[i + 2] == 0x6C, b[i + 3] == 0x73, b[i + 4] == 0x65 { i += 5; return false }
        return nil
    }

    /// The extent of an object value (strings and nesting tracked), parsed strictly. When the
    /// bytes are already what the writer would write back (`CanonicalJSON`), they are kept as
    /// they are (`raw`) and the record copies them instead of serializing the tree again.
    private mutating func detailsObject() -> (value: JSONValue, raw: [UInt8]?)? {
        guard i < b.count, b[i] == 0x7B else { return nil }
        let start = i
        var depth = 0
        var inString = false
        while i < b.count {
            let c = b[i]
            if inString {
                if c == 0x5C { i += 2; continue }
                if c == 0x22 { inString = false }
            } else if c == 0x22 {
                inString = true
            } else if c == 0x7B || c == 0x5B {
                depth += 1
            } else if c == 0x7D || c == 0x5D {
                depth -= 1
                if depth == 0 {
                    i += 1
                    let slice = UnsafeBufferPointer(rebasing: b[start..<i])
                    var canonical = CanonicalJSON(b: slice, maxDepth: maxDepth - 1)
                    if canonical.object(depth: 1) && canonical.i == slice.count {
                        return (.null, Array(slice))
                    }
                    guard let v = try? JSONReader.parse(UnsafeRawBufferPointer(slice), options: .init(maxBytes: b.count, maxDepth: maxDepth - 1)),
                          case .object = v else { return nil }
                    return (v, nil)
                }
            }
            i += 1
        }
        return nil
    }

    mutating func scan() -> Result? {
        var r = Result(builder: EventBuilder())
        var seen = 0
        ws()
        guard i < b.count, b[i] == 0x7B else { return nil }
        i += 1
        ws()
        if i < b.count, b[i] == 0x7D { return nil }  // {} : let the strict path say what is missing
        while true {
            ws()
            guard let key = plainString(), let (f, max) = Self.field(key) else { return nil }
            let bit = 1 << f.rawValue
            guard seen & bit == 0 else { return nil }
            seen |= bit
            ws()
            guard i < b.count, b[i] == 0x3A else { return nil }
            i += 1
            ws()
            switch f {
            case .success:
                guard let v = literalBool() else { return nil }
                r.success = v
            case .sensitive:
                guard let v = literalBool() else { return nil }
                r.builder.sensitive = v
            case .details:
                guard let d = detailsObject() else { return nil }
                if let raw = d.raw { r.builder.detailsRaw = raw } else { r.builder.details = d.value }
            default:
                guard let s = plainString(), s.count <= max else { return nil }
                let v = String(decoding: s, as: UTF8.self)
                switch f {
                case .type: r.type = v
                case .subtype: r.builder.subtype = v
                case .result: r.builder.result = v
                case .reason: r.builder.reason = v
                case .severity: r.builder.severity = v
                case .actor: r.builder.actor = v
                case .tenant: r.builder.tenant = v
                case .ip: r.builder.ip = v
                case .userAgent: r.builder.userAgent = v
                case .sessionID: r.builder.sessionID = v
                case .resource: r.builder.resource = v
                case .resourceID: r.builder.resourceID = v
                case .action: r.builder.action = v
                case .classification: r.builder.classification = v
                default: return nil
                }
            }
            ws()
            guard i < b.count else { return nil }
            if b[i] == 0x2C { i += 1; continue }
            if b[i] == 0x7D { i += 1; break }
            return nil
        }
        ws()
        return i == b.count ? r : nil
    }
}

internal import Glibc

@inline(__always)
func memcmpEqual(_ a: UnsafePointer<UInt8>, _ b: UnsafePointer<UInt8>?, _ n: Int) -> Bool {
    guard let b else { return n == 0 }
    return memcmp(a, b, n) == 0
}

/// For tests: whether the fast scanner and the strict path agree on an event (when the
/// scanner takes it, the strict path must accept or refuse it the same way and produce the
/// same record body).
public enum AuditScannerProbe {
    public static func agree(_ event: [UInt8], maxDepth: Int = 8) -> Bool {
        let v = EventValidator(maxBytes: 1 << 20, maxDepth: maxDepth, extraTypes: [])
        return event.withUnsafeBytes { raw -> Bool in
            var scanner = FastEventScanner(bytes: raw.bindMemory(to: UInt8.self), maxDepth: maxDepth)
            guard let fast = scanner.scan() else { return true }
            let f: Result<[UInt8], BitsecError>
            do throws(BitsecError) { f = .success(try v.finish(fast.builder, fast.type, fast.success).encode(timeMicros: 1, service: nil).body) }
            catch { f = .failure(error) }
            let s: Result<[UInt8], BitsecError>
            do throws(BitsecError) { s = .success(try v.validateSlow(raw).encode(timeMicros: 1, service: nil).body) }
            catch { s = .failure(error) }
            switch (f, s) {
            case (.success(let a), .success(let b)): return a == b
            case (.failure(let a), .failure(let b)): return a.status == b.status && a.detail == b.detail
            default: return false
            }
        }
    }

    /// Whether the fast scanner keeps the event's details as the caller wrote them.
    public static func keepsDetailsAsWritten(_ event: [UInt8], maxDepth: Int = 8) -> Bool {
        event.withUnsafeBytes { raw -> Bool in
            var scanner = FastEventScanner(bytes: raw.bindMemory(to: UInt8.self), maxDepth: maxDepth)
            return scanner.scan()?.builder.detailsRaw != nil
        }
    }

    /// Whether the fast scanner takes the event at all.
    public static func takes(_ event: [UInt8]) -> Bool {
        event.withUnsafeBytes { raw in
            var scanner = FastEventScanner(bytes: raw.bindMemory(to: UInt8.self), maxDepth: 8)
            return scanner.scan() != nil
        }
    }
}
