internal import Synchronization

/// The `store.host` settings: the shared-memory region that features whose store is `host`
/// keep their tables in (one file per region, mapped by every process that opens it).
public struct HostStoreSettings: Sendable, Equatable {
    /// The region's name: 1-64 bytes of `A-Za-z0-9_-.`. Processes that give the same name
    /// (and directory) share the state. Nil when `store.host.name` is not set.
    public var name: String?
    /// Where the region file `bitsec-<name>.region` lives (default `/dev/shm`, a tmpfs).
    public var directory: String
    /// The region's size in bytes, reserved when it is created (default 64 MiB).
    public var maxBytes: Int64

    public static let defaultDirectory = "/dev/shm"
    public static let defaultMaxBytes: Int64 = 64 << 20
    /// Smallest and largest `max_bytes`: 1 MiB to 64 GiB.
    public static let maxBytesRange: ClosedRange<Int64> = (1 << 20)...(1 << 36)

    public init(name: String? = nil, directory: String = HostStoreSettings.defaultDirectory,
                maxBytes: Int64 = HostStoreSettings.defaultMaxBytes) {
        self.name = name
        self.directory = directory
        self.maxBytes = maxBytes
    }

    /// A region name: 1-64 bytes of `A-Z a-z 0-9 _ - .` (it becomes part of a file name).
    static func validName(_ s: String) -> Bool {
        guard !s.isEmpty, s.utf8.count <= 64 else { return false }
        return s.utf8.allSatisfy { c in
            (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || c == 0x5F || c == 0x2D || c == 0x2E
        }
    }

    static func read(_ o: ConfigObject) throws(BitsecError) -> HostStoreSettings {
        var s = HostStoreSettings()
        if let name = try o.string("name") {
            guard validName(name) else { throw .config("\(o.fieldPath("name")): 1-64 characters of A-Z a-z 0-9 _ - .") }
            s.name = name
        }
        if let dir = try o.string("directory") {
            guard dir.utf8.first == UInt8(ascii: "/"), dir.utf8.count <= 4096, !dir.utf8.contains(0) else {
                throw .config("\(o.fieldPath("directory")) must be an absolute path")
            }
            s.directory = dir
        }
        s.maxBytes = try o.int("max_bytes", in: maxBytesRange, default: defaultMaxBytes)
        try o.finish()
        return s
    }
}

/// The top-level `store` section: the store of every stateful feature that does not name
/// its own, and the shared-memory region of the `host` store.
///
/// ```json
/// "store": {"default": "host", "host": {"name": "orders-api", "directory": "/dev/shm", "max_bytes": 67108864}}
/// ```
///
/// `default` is `redis` when the document has a `redis` section, else `process`.
public struct StoreSettings: Sendable {
    public var defaultKind: StoreKind
    /// The field that chose the default (`store.default`), nil when it is implied.
    public var defaultField: String?
    public var host: HostStoreSettings
    /// Whether the document has a `redis` section.
    public var hasRedis: Bool

    public init(defaultKind: StoreKind? = nil, host: HostStoreSettings = HostStoreSettings(), hasRedis: Bool) {
        self.defaultKind = defaultKind ?? (hasRedis ? .redis : .process)
        self.defaultField = defaultKind == nil ? nil : "store.default"
        self.host = host
        self.hasRedis = hasRedis
    }

    /// Reads the `store` section (absent: the defaults).
    /// The default bound (`max_keys`) of a feature's in-memory tables: 100,000 keys in process
    /// (and for Redis's outage fallback tables); 10,000 in the host store, so that the tables
    /// of a configuration with every feature fit the region's default 64 MiB (a failure
    /// window keeps up to `max_failures` instants per key: the login guard's account window,
    /// 100 of them, is about 1 KB per key). Set `max_keys` and `store.host.max_bytes` together
    /// for more.
    public static func defaultMaxKeys(_ kind: StoreKind) -> Int64 { kind == .host ? 10_000 : 100_000 }

    static func read(_ o: ConfigObject?, hasRedis: Bool) throws(BitsecError) -> StoreSettings {
        guard let o else { return StoreSettings(hasRedis: hasRedis) }
        let choices = StoreKind.allCases.map(\.rawValue)
        var kind: StoreKind? = nil
        if let d = try o.string("default") {
            guard let k = StoreKind(rawValue: d) else { throw .config("\(o.fieldPath("default")) must be one of \(choices.joined(separator: ", "))") }
            kind = k
        }
        let host = try o.object("host").map { (h) throws(BitsecError) in try HostStoreSettings.read(h) } ?? HostStoreSettings()
        try o.finish()
        var s = StoreSettings(defaultKind: kind, host: host, hasRedis: hasRedis)
        s.defaultField = kind == nil ? nil : o.fieldPath("default")
        // The default itself must be usable even if no feature ends up using it.
        if let f = s.defaultField { try s.check(s.defaultKind, field: f) }
        return s
    }

    /// Refuses a kind the document cannot provide, naming the field that chose it.
    func check(_ kind: StoreKind, field: String) throws(BitsecError) {
        switch kind {
        case .process: return
        case .redis:
            if !hasRedis { throw .config("\(field) is redis but the configuration has no redis section") }
        case .host:
            if host.name == nil { throw .config("\(field) is host but store.host.name is not set (the shared region's name)") }
        }
    }

    /// Reads the store of one feature from its section: the field `field` (`process`, `host`,
    /// `redis`, or one of `aliases`, the values older versions accepted), or the older field
    /// `oldField` whose values map through `oldValues` (a nil mapping: the default). Giving
    /// both fields is an error. Without either: the default. A kind the document cannot
    /// provide is refused naming the field (or `store.default`).
    func select(_ o: ConfigObject?, field: String, aliases: [String: StoreKind] = [:],
                oldField: String? = nil, oldValues: [String: StoreKind?] = [:]) throws(BitsecError) -> StoreKind {
        guard let o else { return try inherited() }
        let newValue = try o.string(field)
        let oldValue = try oldField.flatMap { (f) throws(BitsecError) in try o.string(f) }
        if newValue != nil, oldValue != nil, let oldField {
            throw .config("\(o.fieldPath(field)) and \(o.fieldPath(oldField)) are both set: give only \(o.fieldPath(field)) (\(oldField) is its older name)")
        }
        if let v = newValue {
            let names = StoreKind.allCases.map(\.rawValue) + aliases.keys.sorted()
            guard let k = StoreKind(rawValue: v) ?? aliases[v] else {
                throw .config("\(o.fieldPath(field)) must be one of \(names.joined(separator: ", "))")
            }
            try check(k, field: o.fieldPath(field))
            return k
        }
        if let v = oldValue, let oldField {
            guard let mapped = oldValues[v] else {
                throw .config("\(o.fieldPath(oldField)) must be one of \(oldValues.keys.sorted().joined(separator: ", "))")
            }
            guard let k = mapped else { return try inherited() }
            try check(k, field: o.fieldPath(oldField))
            return k
        }
        return try inherited()
    }

    private func inherited() throws(BitsecError) -> StoreKind {
        try check(defaultKind, field: defaultField ?? "store.default")
        return defaultKind
    }
}

/// The stores of one runtime: its `store` settings, and the shared region of the `host`
/// store, opened the first time a feature needs it and shared by every table of the runtime.
public final class StoreContext: Sendable {
    public let settings: StoreSettings
    private let hostCache = Mutex<TablePlacement?>(nil)

    public init(settings: StoreSettings) {
        self.settings = settings
    }

    /// Where the in-memory tables of a feature whose store is `kind` live: the shared region
    /// for `host`; this process for `process`, and for `redis` (whose in-memory tables are
    /// only the fallback used while Redis is unavailable, kept per process). `field` names
    /// the setting in an error.
    func placement(_ kind: StoreKind, field: String) throws(BitsecError) -> TablePlacement {
        guard kind == .host else { return .process }
        let host = settings.host
        let r: Result<TablePlacement, BitsecError> = hostCache.withLock { (cached: inout TablePlacement?) in
            if let cached { return .success(cached) }
            do throws(BitsecError) {
                let p = try hostPlacement(host)
                cached = p
                return .success(p)
            } catch {
                return .failure(error)
            }
        }
        do {
            return try r.get()
        } catch {
            throw BitsecError(error.status, "\(field): \(error.detail)")
        }
    }

    /// The host region, when a feature has opened it.
    var hostRegion: SharedRegion? {
        hostCache.withLock { (p: inout TablePlacement?) -> SharedRegion? in
            if case .host(let r)? = p { return r }
            return nil
        }
    }

    /// The `store` section for `describe`.
    func describe() -> JSONValue {
        let h = settings.host
        return .object(JSONObject([
            ("default", .string(settings.defaultKind.rawValue)),
            ("host", h.name == nil ? .null : .object(JSONObject([
                ("name", .string(h.name ?? "")),
                ("directory", .string(h.directory)),
                ("max_bytes", .number(JSONNumber(int64: h.maxBytes))),
            ]))),
        ]))
    }
}

extension StoreContext {
    /// The reloads shared by the processes of the host region: with `store.host.name` set
    /// and the host store in use (the default or any feature's), nil otherwise.
    func hostReloads(config: UnsafeRawBufferPointer) throws(BitsecError) -> HostReloads? {
        guard settings.host.name != nil, settings.defaultKind == .host || hostRegion != nil else { return nil }
        guard case .host(let region) = try placement(.host, field: "store.host") else { return nil }
        let suffix = ".region"
        let base = region.path.hasSuffix(suffix) ? String(region.path.dropLast(suffix.count)) : region.path
        return HostReloads(counters: region, base: base, config: config)
    }
}

extension SharedRegion: GenerationCounters {}
