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

    /// The extent of an object value (strings and nesting tracked), parsed strictly.
    private mutating func detailsObject() -> JSONValue? {
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
                    let slice = UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(b)[start..<i])
                    guard let v = try? JSONReader.parse(slice, options: .init(maxBytes: b.count, maxDepth: maxDepth - 1)),
                          case .object = v else { return nil }
                    return v
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
                guard let v = detailsObject() else { return nil }
                r.builder.details = v
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

    /// Whether the fast scanner takes the event at all.
    public static func takes(_ event: [UInt8]) -> Bool {
        event.withUnsafeBytes { raw in
            var scanner = FastEventScanner(bytes: raw.bindMemory(to: UInt8.self), maxDepth: 8)
            return scanner.scan() != nil
        }
    }
}
