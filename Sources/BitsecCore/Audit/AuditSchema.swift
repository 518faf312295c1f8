internal import Glibc

/// The event schema (docs/audit.md): what a caller may send, how it is validated and the
/// canonical member order of the record bitsec writes.
///
/// A caller's event is one JSON object. `type` is required; the other members are optional:
///
/// | member | aliases (ADR-007 / ERP names) | value |
/// |---|---|---|
/// | `type` | | a known type (below) or one of `extra_types` |
/// | `subtype` | `event_subtype` | name, e.g. `login`, `failed_login`, `read` |
/// | `result` | `success` (bool) | `success`, `failure`, `denied`, `allowed`, `error`, `unknown` |
/// | `reason` | `failure_reason` | text |
/// | `severity` | | `info`, `low`, `medium`, `high`, `critical` |
/// | `actor` | `user_id` | text |
/// | `tenant` | `tenant_id` | text |
/// | `ip` | `ip_address` | an IPv4 or IPv6 address |
/// | `user_agent` | | text |
/// | `session_id` | | text |
/// | `resource`, `resource_id` | | text |
/// | `action` | `operation` | text |
/// | `sensitive_data_accessed` | | bool |
/// | `data_classification` | | text |
/// | `details` | | object (anything JSON, bounded by size and depth) |
///
/// `time`, `seq`, `id`, `prev`, `hash`, `service`, `automatic` and `truncated` are stamped by
/// bitsec and refused from callers; anything else is refused too ("put it in details").
///
/// Size never silences an event: a text member longer than its limit is cut by bytes at a
/// UTF-8 boundary, `details` larger than `max_event_bytes` is cut down (long strings first,
/// then trailing members), and the record names what was cut in `truncated`.
public enum AuditSchema {
    /// Canonical types (ADR-007's four, plus what bitsec itself reports).
    public static let knownTypes: [String] = [
        "authentication", "authorization", "data_access", "security_incident", "session",
        "rate_limit", "mfa", "key_management", "configuration", "application",
    ]
    /// Reserved for bitsec's own records (drops, sink recovery, restarts).
    public static let internalType = "audit"

    /// The ERP guide's event types, mapped to (type, default subtype, default result).
    public static let legacyTypes: [String: (String, String, String)] = [
        "login_success": ("authentication", "login", "success"),
        "login_failure": ("authentication", "failed_login", "failure"),
        "permission_denied": ("authorization", "permission_denied", "denied"),
        "data_modification": ("data_access", "update", "success"),
        "security_violation": ("security_incident", "security_violation", "failure"),
    ]

    public static let results = ["success", "failure", "denied", "allowed", "error", "unknown"]
    public static let severities = ["info", "low", "medium", "high", "critical"]

    public static func isKnownType(_ t: String) -> Bool {
        knownTypes.contains(t) || legacyTypes[t] != nil || t == internalType || t == "data_access"
    }

    /// `[a-z][a-z0-9_]{0,63}`: usable as a Prometheus metric name part.
    public static func isName(_ s: String) -> Bool {
        let u = s.utf8
        guard let f = u.first, u.count <= 64, f >= 0x61, f <= 0x7A else { return false }
        return u.allSatisfy { ($0 >= 0x61 && $0 <= 0x7A) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x5F }
    }

    /// Subtypes are label values: printable ASCII without quotes or backslashes, 1-64 bytes.
    static func isSubtype(_ s: String) -> Bool {
        let u = s.utf8
        return !u.isEmpty && u.count <= 64 && u.allSatisfy { $0 > 0x20 && $0 < 0x7F && $0 != 0x22 && $0 != 0x5C }
    }

    static func isIP(_ s: String) -> Bool {
        // (a NUL would end the C string inet_pton reads: "10.0.0.1\0 text" must not pass)
        guard s.utf8.count <= 45, !s.utf8.contains(0) else { return false }
        var buf = [UInt8](repeating: 0, count: 16)
        return s.withCString { p in inet_pton(AF_INET, p, &buf) == 1 || inet_pton(AF_INET6, p, &buf) == 1 }
    }
}

/// An event validated and encoded, ready to be sequenced and chained by the writer.
public struct PreparedEvent: Sendable {
    /// The record's members from `"time"` to the end of `details`, without braces.
    public var body: [UInt8]
    public var key: MetricKey
}

/// What the counters are keyed by.
public struct MetricKey: Hashable, Sendable {
    public var type: String
    public var subtype: String
    public var result: String
    /// Only for `data_access`: the `sensitive_data_accessed` label.
    public var sensitive: Bool?
}

/// Builds the canonical body of a record from validated fields.
struct EventBuilder {
    var type = ""
    var subtype: String?
    var result: String?
    var reason: String?
    var severity: String?
    var actor: String?
    var tenant: String?
    var ip: String?
    var userAgent: String?
    var sessionID: String?
    var resource: String?
    var resourceID: String?
    var action: String?
    var sensitive: Bool?
    var classification: String?
    var details: JSONValue?
    /// `details` as the caller wrote it, when that is exactly what the writer would write
    /// (`CanonicalJSON`); then `details` is nil.
    var detailsRaw: [UInt8]?
    var automatic = false
    /// The members (and `details.<key>`s) that were cut to their limits, in order.
    var truncated: [String] = []

    func encode(timeMicros: Int64, service: String?) -> PreparedEvent {
        var w: [UInt8] = []
        w.reserveCapacity(320)
        Self.lit("\"time\":\"", &w)
        RFC3339.append(micros: timeMicros, to: &w)
        Self.lit("\",\"type\":", &w)
        Self.string(type, &w)
        let st = subtype ?? "none"
        Self.lit(",\"subtype\":", &w)
        Self.string(st, &w)
        let res = result ?? "unknown"
        Self.lit(",\"result\":", &w)
        Self.string(res, &w)
        Self.opt(",\"reason\":", reason, &w)
        Self.opt(",\"severity\":", severity, &w)
        Self.opt(",\"actor\":", actor, &w)
        Self.opt(",\"tenant\":", tenant, &w)
        Self.opt(",\"ip\":", ip, &w)
        Self.opt(",\"user_agent\":", userAgent, &w)
        Self.opt(",\"session_id\":", sessionID, &w)
        Self.opt(",\"resource\":", resource, &w)
        Self.opt(",\"resource_id\":", resourceID, &w)
        Self.opt(",\"action\":", action, &w)
        if let sensitive { Self.lit(sensitive ? ",\"sensitive_data_accessed\":true" : ",\"sensitive_data_accessed\":false", &w) }
        Self.opt(",\"data_classification\":", classification, &w)
        Self.opt(",\"service\":", service, &w)
        if automatic { Self.lit(",\"automatic\":true", &w) }
        if let detailsRaw {
            Self.lit(",\"details\":", &w)
            w.append(contentsOf: detailsRaw)
        } else if let details {
            Self.lit(",\"details\":", &w)
            w.append(contentsOf: JSONWriter.serialize(details))
        }
        if !truncated.isEmpty {
            Self.lit(",\"truncated\":[", &w)
            for (i, t) in truncated.enumerated() {
                if i > 0 { w.append(0x2C) }
                Self.string(t, &w)
            }
            w.append(0x5D)
        }
        let key = MetricKey(type: type, subtype: st, result: res,
                            sensitive: type == "data_access" ? (sensitive ?? false) : nil)
        return PreparedEvent(body: w, key: key)
    }

    @inline(__always)
    static func lit(_ s: StaticString, _ out: inout [UInt8]) {
        out.append(contentsOf: UnsafeBufferPointer(start: s.utf8Start, count: s.utf8CodeUnitCount))
    }

    @inline(__always)
    static func opt(_ name: StaticString, _ v: String?, _ out: inout [UInt8]) {
        guard let v else { return }
        lit(name, &out)
        string(v, &out)
    }

    /// A JSON string, escaped exactly like JSONWriter, with a bulk copy when nothing needs
    /// escaping (the common case).
    static func string(_ s: String, _ out: inout [UInt8]) {
        var s = s
        out.append(0x22)
        s.withUTF8 { u in
            var clean = true
            for c in u where c < 0x20 || c == 0x22 || c == 0x5C || c == 0x7F { clean = false; break }
            if clean {
                out.append(contentsOf: u)
            } else {
                var w = JSONWriter(reserving: u.count + 8)
                w.writeString(String(decoding: u, as: UTF8.self))
                out.append(contentsOf: w.bytes.dropFirst().dropLast())
            }
        }
        out.append(0x22)
    }
}

/// Cutting text by bytes without splitting a character.
enum UTF8Cut {
    /// The longest prefix of `s` of at most `max` bytes that ends on a character boundary
    /// (a scalar boundary of valid UTF-8: never inside a multi-byte sequence).
    static func prefix(_ s: String, _ max: Int) -> String {
        let u = s.utf8
        guard u.count > max else { return s }
        var cut = Swift.max(0, max)
        var bytes = Array(u)
        // A continuation byte (10xxxxxx) at the cut means the cut is inside a sequence.
        while cut > 0 && cut < bytes.count && bytes[cut] & 0xC0 == 0x80 { cut -= 1 }
        bytes.removeSubrange(cut...)
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// Validation of caller events.
struct EventValidator {
    /// The most of `details`, serialized, that a record keeps (`max_event_bytes`).
    let maxBytes: Int
    let maxDepth: Int
    let extraTypes: [String]

    static let maxTextBytes = 1024
    /// The most an event may be as received (`BITSEC_AUDIT_MAX_EVENT_BYTES`); anything up to
    /// this is read and cut down to the member limits and `max_event_bytes`.
    static let maxInputBytes = AuditConfig.maxEventBytesLimit
    /// The most `details.<key>` names a record's `truncated` lists; more collapse to `details`.
    static let maxTruncatedNames = 16

    private func string(_ name: String, _ v: JSONValue) throws(BitsecError) -> String {
        guard case .string(let s) = v else { throw .invalid("event.\(name) must be a string, got \(v.typeName)") }
        return s
    }

    /// A member whose value is one of a few words or an address: longer than `max` cannot
    /// be valid, so it is refused (a structural error, not a size one).
    private func word(_ name: String, _ v: JSONValue, max: Int) throws(BitsecError) -> String {
        let s = try string(name, v)
        guard s.utf8.count <= max else { throw .invalid("event.\(name) is longer than \(max) bytes: not a valid value") }
        return s
    }

    private func setWord(_ slot: inout String?, _ name: String, _ v: JSONValue, max: Int) throws(BitsecError) {
        guard slot == nil else { throw .invalid("event.\(name): given twice (under its name and an alias)") }
        slot = try word(name, v, max: max)
    }

    /// Free text: cut to `max` bytes at a character boundary, the record member's name
    /// (`field`) added to `truncated`.
    private func setText(_ slot: inout String?, _ name: String, _ v: JSONValue, field: String,
                         max: Int = EventValidator.maxTextBytes, _ marks: inout [String]) throws(BitsecError) {
        guard slot == nil else { throw .invalid("event.\(name): given twice (under its name and an alias)") }
        let s = try string(name, v)
        if s.utf8.count > max {
            slot = UTF8Cut.prefix(s, max)
            if !marks.contains(field) { marks.append(field) }
        } else {
            slot = s
        }
    }

    func validate(_ bytes: UnsafeRawBufferPointer) throws(BitsecError) -> EventBuilder {
        guard bytes.count <= Self.maxInputBytes else {
            throw .tooLarge("event of \(bytes.count) bytes exceeds \(Self.maxInputBytes) bytes")
        }
        var scanner = FastEventScanner(bytes: bytes.bindMemory(to: UInt8.self), maxDepth: maxDepth)
        var b: EventBuilder
        if let fast = scanner.scan() {
            b = try finish(fast.builder, fast.type, fast.success)
        } else {
            b = try validateSlow(bytes)
        }
        // The JSON writer emits at most 6 bytes per byte read (a raw DEL becomes \u007f; a
        // number such as 1e18 becomes 19 digits): a small event cannot need cutting down, and
        // the common case skips serializing details twice.
        if bytes.count > maxBytes / 6 {
            // the tree is needed to cut it down (canonical JSON always parses)
            if let raw = b.detailsRaw, let tree = try? JSONReader.parse(raw, options: .init(maxBytes: raw.count, maxDepth: maxDepth)) {
                b.details = tree
                b.detailsRaw = nil
            }
            boundDetails(&b)
        }
        return b
    }

    /// The authoritative path: the strict reader, then member by member with precise errors.
    func validateSlow(_ bytes: UnsafeRawBufferPointer) throws(BitsecError) -> EventBuilder {
        let doc: JSONValue
        do {
            doc = try JSONReader.parse(bytes, options: .init(maxBytes: Self.maxInputBytes, maxDepth: maxDepth))
        } catch {
            if error.detail.contains("depth") {
                throw BitsecError(.malformed, "event nesting exceeds max_depth (\(maxDepth))")
            }
            throw BitsecError(error.status, "event: \(error.detail)")
        }
        guard case .object(let o) = doc else { throw .invalid("event must be a JSON object, got \(doc.typeName)") }
        var b = EventBuilder()
        var type: String?
        var success: Bool?
        try members(o, &b, &type, &success)
        return try finish(b, type, success)
    }

    private func members(_ o: JSONObject, _ b: inout EventBuilder, _ type: inout String?, _ success: inout Bool?) throws(BitsecError) {
        var m: [String] = []
        for (k, v) in o.members {
            if v.isNull { continue }
            switch k {
            case "type": type = try word("type", v, max: 64)
            case "subtype", "event_subtype": try setText(&b.subtype, k, v, field: "subtype", max: 64, &m)
            case "result": try setWord(&b.result, k, v, max: 16)
            case "success":
                guard case .bool(let s) = v else { throw .invalid("event.success must be a boolean, got \(v.typeName)") }
                success = s
            case "reason", "failure_reason": try setText(&b.reason, k, v, field: "reason", &m)
            case "severity": try setWord(&b.severity, k, v, max: 16)
            case "actor", "user_id": try setText(&b.actor, k, v, field: "actor", max: 256, &m)
            case "tenant", "tenant_id": try setText(&b.tenant, k, v, field: "tenant", max: 256, &m)
            case "ip", "ip_address": try setWord(&b.ip, k, v, max: 64)
            case "user_agent": try setText(&b.userAgent, k, v, field: "user_agent", &m)
            case "session_id": try setText(&b.sessionID, k, v, field: "session_id", max: 256, &m)
            case "resource": try setText(&b.resource, k, v, field: "resource", &m)
            case "resource_id": try setText(&b.resourceID, k, v, field: "resource_id", max: 256, &m)
            case "action", "operation": try setText(&b.action, k, v, field: "action", max: 64, &m)
            case "data_classification": try setText(&b.classification, k, v, field: "data_classification", max: 64, &m)
            case "sensitive_data_accessed":
                guard case .bool(let s) = v else { throw .invalid("event.sensitive_data_accessed must be a boolean, got \(v.typeName)") }
                b.sensitive = s
            case "details":
                guard case .object = v else { throw .invalid("event.details must be an object, got \(v.typeName)") }
                b.details = v
            case "time", "seq", "id", "prev", "hash", "service", "automatic", "truncated":
                throw .invalid("event.\(k) is stamped by bitsec and cannot be given")
            default:
                let shown = k.utf8.count <= 64 && k.utf8.allSatisfy({ $0 >= 0x20 && $0 < 0x7F }) ? "'\(k)'" : "(\(k.utf8.count) bytes)"
                throw .invalid("event: unknown member \(shown); put extra data in details")
            }
        }
        b.truncated = m
    }

    /// Cuts `details` down to `maxBytes` serialized: strings longer than 1024, then 256, 64,
    /// 16 bytes are cut (at a character boundary); if that is not enough, trailing members
    /// are left out. Each top-level key whose value was cut is named `details.<key>` in
    /// `truncated` (`details` alone when members were left out, the key is not a plain
    /// name, or more than `maxTruncatedNames` keys were cut).
    func boundDetails(_ b: inout EventBuilder) {
        guard let d = b.details, case .object(var o) = d else { return }
        var size = JSONWriter.serialize(d).count
        guard size > maxBytes else { return }
        var cutKeys: [String] = []
        var dropped = false
        for cap in [1024, 256, 64, 16] where size > maxBytes {
            var members = o.members
            for i in members.indices {
                var hit = false
                members[i].value = Self.clip(members[i].value, cap, &hit)
                if hit && !cutKeys.contains(members[i].key) { cutKeys.append(members[i].key) }
            }
            o = JSONObject(members)
            size = JSONWriter.serialize(.object(o)).count
        }
        if size > maxBytes {
            var kept: [(key: String, value: JSONValue)] = []
            var used = 2
            for m in o.members {
                var one = JSONWriter(reserving: 64)
                one.writeString(m.key)
                let n = one.bytes.count + 1 + JSONWriter.serialize(m.value).count + (kept.isEmpty ? 0 : 1)
                if used + n > maxBytes { dropped = true; break }
                used += n
                kept.append(m)
            }
            o = JSONObject(kept)
        }
        b.details = .object(o)
        let plain = cutKeys.allSatisfy(AuditSchema.isSubtype)
        if dropped || !plain || cutKeys.count > Self.maxTruncatedNames {
            b.truncated.append("details")
        } else {
            b.truncated += cutKeys.map { "details." + $0 }
        }
    }

    private static func clip(_ v: JSONValue, _ cap: Int, _ hit: inout Bool) -> JSONValue {
        switch v {
        case .string(let s) where s.utf8.count > cap:
            hit = true
            return .string(UTF8Cut.prefix(s, cap))
        case .array(let a):
            return .array(a.map { clip($0, cap, &hit) })
        case .object(let o):
            return .object(JSONObject(o.members.map { ($0.key, clip($0.value, cap, &hit)) }))
        default:
            return v
        }
    }

    /// The checks that do not depend on how the members were read.
    func finish(_ b0: EventBuilder, _ type: String?, _ success: Bool?) throws(BitsecError) -> EventBuilder {
        var b = b0
        guard let type else { throw .invalid("event.type is required") }
        if AuditSchema.knownTypes.contains(type) {
            b.type = type  // the common case first: no dictionary lookup
        } else if let legacy = AuditSchema.legacyTypes[type] {
            b.type = legacy.0
            if b.subtype == nil { b.subtype = legacy.1 }
            if b.result == nil && success == nil { b.result = legacy.2 }
        } else if AuditSchema.knownTypes.contains(type) || extraTypes.contains(type) {
            b.type = type
        } else if type == AuditSchema.internalType {
            throw .invalid("event.type 'audit' is reserved for bitsec's own records")
        } else {
            let shown = AuditSchema.isName(type) ? "'\(type)'" : "(not a name)"
            throw .invalid("event.type \(shown) is not a known type (\(AuditSchema.knownTypes.joined(separator: ", ")), or one of extra_types)")
        }
        if b.subtype == nil, b.type == "data_access", let a = b.action, AuditSchema.isSubtype(a) { b.subtype = a }
        if let s = b.subtype, !AuditSchema.isSubtype(s) {
            throw .invalid("event.subtype must be 1-64 printable ASCII characters without quotes or backslashes")
        }
        if let success {
            let r = success ? "success" : "failure"
            if let given = b.result, given != r { throw .invalid("event.success contradicts event.result") }
            b.result = r
        }
        if let r = b.result, !AuditSchema.results.contains(r) {
            throw .invalid("event.result must be one of \(AuditSchema.results.joined(separator: ", "))")
        }
        if let s = b.severity, !AuditSchema.severities.contains(s) {
            throw .invalid("event.severity must be one of \(AuditSchema.severities.joined(separator: ", "))")
        }
        if let ip = b.ip, !AuditSchema.isIP(ip) { throw .invalid("event.ip is not an IPv4 or IPv6 address") }
        return b
    }
}

/// RFC 3339 UTC timestamps with microseconds (`2026-11-22T15:24:03.123456Z`), no Foundation.
enum RFC3339 {
    static func append(micros: Int64, to w: inout [UInt8]) {
        let at = w.count
        w.append(contentsOf: repeatElement(0, count: 27))
        format(micros: micros, into: &w, at: at)
    }

    static func string(micros: Int64) -> String {
        var buf = [UInt8](repeating: 0, count: 27)
        format(micros: micros, into: &buf, at: 0)
        return String(decoding: buf, as: UTF8.self)
    }

    static func format(micros: Int64, into b: inout [UInt8], at o: Int) {
        let us = ((micros % 1_000_000) + 1_000_000) % 1_000_000
        let secs = (micros - us) / 1_000_000
        let sod = ((secs % 86400) + 86400) % 86400
        let days = (secs - sod) / 86400
        // Howard Hinnant's civil_from_days.
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let d = doy - (153 * mp + 2) / 5 + 1
        let m = mp < 10 ? mp + 3 : mp - 9
        let y = min(max(yoe + era * 400 + (m <= 2 ? 1 : 0), 0), 9999)
        func put(_ v: Int64, _ at: Int, _ n: Int) {
            var v = v
            for k in stride(from: o + at + n - 1, through: o + at, by: -1) { b[k] = UInt8(48 + v % 10); v /= 10 }
        }
        put(y, 0, 4); b[o + 4] = 0x2D; put(m, 5, 2); b[o + 7] = 0x2D; put(d, 8, 2); b[o + 10] = 0x54
        put(sod / 3600, 11, 2); b[o + 13] = 0x3A; put(sod / 60 % 60, 14, 2); b[o + 16] = 0x3A; put(sod % 60, 17, 2)
        b[o + 19] = 0x2E; put(us, 20, 6); b[o + 26] = 0x5A
    }
}
