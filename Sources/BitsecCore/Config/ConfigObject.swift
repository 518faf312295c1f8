/// Reads one object of the configuration document field by field. Every field read is
/// remembered; `finish()` refuses any field nobody read, naming it with its full path
/// (`redis.hots`): a typo in security configuration must never pass silently.
public final class ConfigObject {
    public let path: String
    private let object: JSONObject
    private var used: Set<String> = []

    public init(_ value: JSONValue, path: String) throws(BitsecError) {
        guard case .object(let o) = value else {
            throw .config("\(path.isEmpty ? "configuration" : path) must be an object, got \(value.typeName)")
        }
        self.path = path
        self.object = o
    }

    public func fieldPath(_ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

    public var keys: [String] { object.keys }

    public func has(_ key: String) -> Bool { object[key] != nil }

    /// The raw value of a field, marking it as read. `null` counts as absent.
    public func value(_ key: String) -> JSONValue? {
        used.insert(key)
        guard let v = object[key], !v.isNull else { return nil }
        return v
    }

    public func string(_ key: String) throws(BitsecError) -> String? {
        guard let v = value(key) else { return nil }
        guard case .string(let s) = v else { throw .config("\(fieldPath(key)) must be a string, got \(v.typeName)") }
        return s
    }

    public func string(_ key: String, default d: String) throws(BitsecError) -> String { try string(key) ?? d }

    public func requiredString(_ key: String) throws(BitsecError) -> String {
        guard let s = try string(key) else { throw .config("\(fieldPath(key)) is required") }
        return s
    }

    /// A string restricted to a closed set of choices.
    public func choice(_ key: String, _ choices: [String], default d: String) throws(BitsecError) -> String {
        let s = try string(key, default: d)
        guard choices.contains(s) else {
            throw .config("\(fieldPath(key)) must be one of \(choices.joined(separator: ", "))")
        }
        return s
    }

    public func int(_ key: String, in range: ClosedRange<Int64>) throws(BitsecError) -> Int64? {
        guard let v = value(key) else { return nil }
        guard case .number(let n) = v, let i = n.int64 else {
            throw .config("\(fieldPath(key)) must be an integer, got \(v.typeName)")
        }
        guard range.contains(i) else {
            throw .config("\(fieldPath(key)) must be between \(range.lowerBound) and \(range.upperBound)")
        }
        return i
    }

    public func int(_ key: String, in range: ClosedRange<Int64>, default d: Int64) throws(BitsecError) -> Int64 {
        try int(key, in: range) ?? d
    }

    public func bool(_ key: String, default d: Bool) throws(BitsecError) -> Bool {
        guard let v = value(key) else { return d }
        guard case .bool(let b) = v else { throw .config("\(fieldPath(key)) must be a boolean, got \(v.typeName)") }
        return b
    }

    public func stringArray(_ key: String) throws(BitsecError) -> [String]? {
        guard let v = value(key) else { return nil }
        if case .string(let s) = v { return [s] }
        guard case .array(let a) = v else { throw .config("\(fieldPath(key)) must be an array of strings, got \(v.typeName)") }
        var out: [String] = []
        for (k, item) in a.enumerated() {
            guard case .string(let s) = item else { throw .config("\(fieldPath(key))[\(k)] must be a string, got \(item.typeName)") }
            out.append(s)
        }
        return out
    }

    public func object(_ key: String) throws(BitsecError) -> ConfigObject? {
        guard let v = value(key) else { return nil }
        return try ConfigObject(v, path: fieldPath(key))
    }

    public func array(_ key: String) throws(BitsecError) -> [JSONValue]? {
        guard let v = value(key) else { return nil }
        guard case .array(let a) = v else { throw .config("\(fieldPath(key)) must be an array, got \(v.typeName)") }
        return a
    }

    /// Refuses fields that were never read.
    public func finish() throws(BitsecError) {
        for k in object.keys where !used.contains(k) {
            throw .config("unknown field \(fieldPath(k))")
        }
    }
}
