/// A Redis reply, copied out of hiredis' reply object.
public enum RedisReply: Sendable, Equatable {
    case string([UInt8])
    case status(String)
    case integer(Int64)
    case null
    case error(String)
    case array([RedisReply])

    public var integer: Int64? { if case .integer(let i) = self { return i } else { return nil } }
    public var bytes: [UInt8]? {
        switch self {
        case .string(let b): return b
        case .status(let s): return Array(s.utf8)
        default: return nil
        }
    }
    public var text: String? { bytes.map { String(decoding: $0, as: UTF8.self) } }
    public var array: [RedisReply]? { if case .array(let a) = self { return a } else { return nil } }
    public var errorMessage: String? { if case .error(let e) = self { return e } else { return nil } }
}
