internal import Glibc

/// The `audit` configuration section (see docs/configuration.md, `## audit`).
public struct AuditConfig: Sendable {
    public enum Durability: String, Sendable { case none, batched, everyEvent = "every_event" }
    public enum FullPolicy: String, Sendable { case drop, block }

    public struct FileSink: Sendable {
        public var path: String
        /// Rotate before a record would make the file larger than this (0 = never).
        public var rotateBytes: Int64
        /// Rotate the first time a record is written this long after the file was opened (0 = never).
        public var rotateSeconds: Int64
        /// Several processes (and runtimes) append to this one chain, coordinated through
        /// the sidecar `<path>.shm` (`SharedAuditHead`).
        public var shared: Bool = false
    }

    public struct SyslogSink: Sendable {
        public var socketPath: String
        public var facility: Int
        public var appName: String
        public var hostname: String
    }

    public struct RedisSink: Sendable {
        public var stream: String
        /// `XADD ... MAXLEN ~ n` (0 = no trimming).
        public var maxLen: Int64
        public var approximate: Bool
    }

    public var file: FileSink?
    public var stdout = false
    public var syslog: SyslogSink?
    public var redis: RedisSink?
    public var durability: Durability = .batched
    public var batchMaxEvents = 1000
    public var batchMaxMs = 50
    public var queueCapacity = 65536
    public var fullPolicy: FullPolicy = .drop
    public var blockTimeoutMs = 100
    public var durableTimeoutMs = 5000
    public var maxEventBytes = 16 << 10
    public var maxDepth = 8
    /// Refused events within this interval after an `event_rejected` record are counted and
    /// reported by one summary record when it ends (a flood cannot flood the trail).
    public var rejectedIntervalMs = 1000
    public var automaticEvents = true
    public var extraTypes: [String] = []
    public var service: String?
    public var hmacKey: SecretBytes?

    public init() {}

    /// Hard ceilings of the configurable limits (also in bitsec.h).
    public static let maxEventBytesLimit = 1 << 20
    public static let maxDepthLimit = 32
    public static let maxQueueCapacity = 1 << 22

    static let facilities: [String: Int] = [
        "kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6, "news": 7,
        "uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11, "local0": 16, "local1": 17, "local2": 18,
        "local3": 19, "local4": 20, "local5": 21, "local6": 22, "local7": 23,
    ]

    public static func read(_ o: ConfigObject, context: CapabilityContext) throws(BitsecError) -> AuditConfig {
        var c = AuditConfig()
        guard let sinks = try o.array("sinks"), !sinks.isEmpty else {
            throw .config("\(o.fieldPath("sinks")) is required: a non-empty array of sinks (file, stdout, syslog, redis)")
        }
        for (k, s) in sinks.enumerated() {
            let so = try ConfigObject(s, path: "\(o.fieldPath("sinks"))[\(k)]")
            let type = try so.choice("type", ["file", "stdout", "syslog", "redis"], default: "")
            switch type {
            case "file":
                guard c.file == nil else { throw .config("\(so.path): only one file sink is allowed (it carries the hash chain)") }
                let path = try so.requiredString("path")
                guard !path.isEmpty, !path.utf8.contains(0) else { throw .config("\(so.fieldPath("path")) must be a file path") }
                c.file = FileSink(path: path,
                                  rotateBytes: try so.int("rotate_bytes", in: 0...(1 << 40), default: 0),
                                  rotateSeconds: try so.int("rotate_seconds", in: 0...(366 * 86400), default: 0),
                                  shared: try so.bool("shared", default: false))
            case "stdout":
                guard !c.stdout else { throw .config("\(so.path): stdout is already a sink") }
                c.stdout = true
            case "syslog":
                guard c.syslog == nil else { throw .config("\(so.path): only one syslog sink is allowed") }
                let fac = try so.choice("facility", Array(facilities.keys).sorted(), default: "authpriv")
                let app = try so.string("app_name", default: "bitsec")
                guard !app.isEmpty, app.utf8.count <= 48, app.utf8.allSatisfy({ $0 > 32 && $0 < 127 }) else {
                    throw .config("\(so.fieldPath("app_name")) must be 1-48 printable ASCII characters without spaces")
                }
                let host = try so.string("hostname") ?? localHostname()
                guard !host.isEmpty, host.utf8.count <= 255, host.utf8.allSatisfy({ $0 > 32 && $0 < 127 }) else {
                    throw .config("\(so.fieldPath("hostname")) must be 1-255 printable ASCII characters without spaces")
                }
                let socketPath = try so.string("socket", default: "/dev/log")
                guard !socketPath.isEmpty, socketPath.utf8.count < 108 else {
                    throw .config("\(so.fieldPath("socket")) must be a unix socket path shorter than 108 bytes")
                }
                c.syslog = SyslogSink(socketPath: socketPath, facility: facilities[fac] ?? 10, appName: app, hostname: host)
            case "redis":
                guard c.redis == nil else { throw .config("\(so.path): only one redis sink is allowed") }
                guard context.redis != nil else { throw .config("\(so.path): the redis sink needs the top-level redis section") }
                let stream = try so.string("stream", default: "audit")
                guard !stream.isEmpty, stream.utf8.count <= 256 else { throw .config("\(so.fieldPath("stream")) must be 1-256 bytes") }
                c.redis = RedisSink(stream: stream,
                                    maxLen: try so.int("maxlen", in: 0...(1 << 40), default: 1_000_000),
                                    approximate: try so.bool("approximate_trim", default: true))
            default:
                throw .config("\(so.fieldPath("type")) is required: file, stdout, syslog or redis")
            }
            try so.finish()
        }
        let d = try o.choice("durability", ["none", "batched", "every_event"], default: "batched")
        c.durability = Durability(rawValue: d) ?? .batched
        c.batchMaxEvents = Int(try o.int("batch_max_events", in: 1...1_000_000, default: 1000))
        c.batchMaxMs = Int(try o.int("batch_max_ms", in: 1...60_000, default: 50))
        c.queueCapacity = Int(try o.int("queue_capacity", in: 1...Int64(maxQueueCapacity), default: 65536))
        c.fullPolicy = FullPolicy(rawValue: try o.choice("full_policy", ["drop", "block"], default: "drop")) ?? .drop
        c.blockTimeoutMs = Int(try o.int("block_timeout_ms", in: 0...60_000, default: 100))
        c.durableTimeoutMs = Int(try o.int("durable_timeout_ms", in: 1...600_000, default: 5000))
        c.maxEventBytes = Int(try o.int("max_event_bytes", in: 256...Int64(maxEventBytesLimit), default: 16 << 10))
        c.maxDepth = Int(try o.int("max_depth", in: 2...Int64(maxDepthLimit), default: 8))
        c.rejectedIntervalMs = Int(try o.int("rejected_interval_ms", in: 1...3_600_000, default: 1000))
        c.automaticEvents = try o.bool("automatic_events", default: true)
        if let extra = try o.stringArray("extra_types") {
            for t in extra {
                guard AuditSchema.isName(t), !AuditSchema.isKnownType(t) else {
                    throw .config("\(o.fieldPath("extra_types")): \(t.utf8.count > 64 ? "a type" : "'\(t)'") must be a new name of [a-z0-9_], 1-64 bytes, starting with a letter")
                }
                c.extraTypes.append(t)
            }
        }
        if let s = try o.string("service") {
            guard !s.isEmpty, s.utf8.count <= 128 else { throw .config("\(o.fieldPath("service")) must be 1-128 bytes") }
            c.service = s
        }
        if let key = try SecretRef.read(o, "hmac_key", context: context.config) {
            guard key.bytes.count >= 16 else { throw .config("\(o.fieldPath("hmac_key")) must be at least 16 bytes") }
            c.hmacKey = key.bytes
        }
        try o.finish()
        return c
    }
}


func localHostname() -> String {
    var buf = [CChar](repeating: 0, count: 256)
    guard gethostname(&buf, 255) == 0 else { return "-" }
    let s = String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    return s.isEmpty ? "-" : s
}
