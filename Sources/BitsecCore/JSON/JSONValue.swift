/// A parsed JSON value. Objects keep member order (the reader has already rejected
/// duplicate names), so lookups are linear: the documents bitsec reads are small.
public enum JSONValue: Sendable, Equatable {
    case null
    case bool(Bool)
    case number(JSONNumber)
    case string(String)
    case array([JSONValue])
    case object(JSONObject)

    public var isNull: Bool { if case .null = self { return true } else { return false } }
    public var stringValue: String? { if case .string(let s) = self { return s } else { return nil } }
    public var boolValue: Bool? { if case .bool(let b) = self { return b } else { return nil } }
    public var numberValue: JSONNumber? { if case .number(let n) = self { return n } else { return nil } }
    public var arrayValue: [JSONValue]? { if case .array(let a) = self { return a } else { return nil } }
    public var objectValue: JSONObject? { if case .object(let o) = self { return o } else { return nil } }
    /// An integer value that is exactly representable (no fraction, no exponent overflow).
    public var int64Value: Int64? { numberValue?.int64 }

    /// The JSON type name, for messages ("expected a string, got a number").
    public var typeName: String {
        switch self {
        case .null: return "null"
        case .bool: return "a boolean"
        case .number: return "a number"
        case .string: return "a string"
        case .array: return "an array"
        case .object: return "an object"
        }
    }

    public subscript(key: String) -> JSONValue? { objectValue?[key] }
}

/// A JSON number: the exact integer when it is one, and the double value.
public struct JSONNumber: Sendable, Equatable {
    /// Set when the literal is an integer (no fraction or exponent) that fits in Int64.
    public let int64: Int64?
    public let double: Double

    public init(int64: Int64) { self.int64 = int64; self.double = Double(int64) }
    public init(double: Double) {
        self.double = double
        // A double that is exactly an integer (e.g. 1.0 or 1e3) still counts as one.
        if double.isFinite, double.rounded(.towardZero) == double, abs(double) < 9.2e18 {
            self.int64 = Int64(double)
        } else {
            self.int64 = nil
        }
    }
}

/// An ordered JSON object with unique member names.
public struct JSONObject: Sendable, Equatable {
    public var members: [(key: String, value: JSONValue)]

    public init(_ members: [(key: String, value: JSONValue)] = []) { self.members = members }

    public subscript(key: String) -> JSONValue? {
        for m in members where m.key == key { return m.value }
        return nil
    }

    public var keys: [String] { members.map(\.key) }
    public var count: Int { members.count }

    public static func == (a: JSONObject, b: JSONObject) -> Bool {
        guard a.members.count == b.members.count else { return false }
        for (x, y) in zip(a.members, b.members) where x.key != y.key || x.value != y.value { return false }
        return true
    }
}
