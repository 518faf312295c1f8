internal import Synchronization
internal import COpenSSL

/// The `fields` capability: authenticated field encryption with a keyring (ids, one
/// primary, rotation, retired keys), context binding, an opt-in deterministic mode, and
/// Fernet compatibility. See `FieldFormat` for the token layout and docs/configuration.md
/// for the section.
///
/// Thread safety: every operation reads one keyring snapshot (an atomic reference load under
/// a mutex); `reload` builds a new snapshot outside the lock and swaps it in, so callers never
/// wait for secrets being read and never see a half-built keyring.
public final class FieldService: Capability {
    public static let sectionName = "fields"

    private let state: Mutex<FieldKeyring>
    private let configContext: ConfigContext
    private let audit: (any AuditHook)?

    init(keyring: FieldKeyring, configContext: ConfigContext, audit: (any AuditHook)?) {
        self.state = Mutex(keyring)
        self.configContext = configContext
        self.audit = audit
    }

    public static func read(_ o: ConfigObject, context: CapabilityContext) throws(BitsecError) -> FieldService {
        FieldService(keyring: try readKeyring(o, context: context.config), configContext: context.config, audit: context.audit)
    }

    /// The current snapshot.
    public var keyring: FieldKeyring {
        @inline(__always) get { state.withLock { $0 } }
    }

    // MARK: - Configuration

    static func readKeyring(_ o: ConfigObject, context: ConfigContext) throws(BitsecError) -> FieldKeyring {
        let master = try SecretRef.read(o, "master", context: context)
        if let master, master.bytes.count < 32 {
            throw .config("\(o.fieldPath("master")): a master key needs at least 32 bytes, got \(master.bytes.count)")
        }
        var keys: [FieldKey] = []
        var masterUsed = false
        if let arr = try o.array("keys") {
            for (i, v) in arr.enumerated() {
                let ko = try ConfigObject(v, path: "\(o.fieldPath("keys"))[\(i)]")
                let id = try ko.requiredString("id")
                guard FieldFormat.isValidKeyId(id) else {
                    throw .config("\(ko.fieldPath("id")) must be 1 to \(FieldFormat.maxKeyIdBytes) characters of A-Z a-z 0-9 . _ -")
                }
                guard !keys.contains(where: { $0.id == id }) else { throw .config("\(ko.fieldPath("id")): duplicate key id \(id)") }
                let status = try ko.choice("status", ["active", "retired"], default: "active")
                let secret = try SecretRef.read(ko, "secret", context: context)
                let derive = try ko.bool("derive_from_master", default: false)
                try ko.finish()
                let material: SecretBytes
                let origin: FieldKey.Origin
                switch (secret, derive) {
                case (let s?, false):
                    guard s.bytes.count >= 32 else {
                        throw .config("\(ko.fieldPath("secret")): a field key needs at least 32 bytes of key material, got \(s.bytes.count)")
                    }
                    material = s.bytes
                    origin = .secret(s.description)
                case (nil, true):
                    guard let master else { throw .config("\(ko.fieldPath("derive_from_master")) needs fields.master") }
                    material = try FieldKDF.subkey(master.bytes, purpose: "key", keyId: id, length: 32)
                    origin = .master
                    masterUsed = true
                default:
                    throw .config("\(ko.path) must have exactly one of secret, derive_from_master")
                }
                keys.append(try FieldKey(id: id, material: material, status: FieldKey.Status(rawValue: status) ?? .active, origin: origin))
            }
        }
        if master != nil, !masterUsed { throw .config("\(o.fieldPath("master")) is set but no key has derive_from_master") }
        var primary: FieldKey? = nil
        if let pid = try o.string("primary") {
            guard let k = keys.first(where: { $0.id == pid }) else { throw .config("\(o.fieldPath("primary")): no key has id \(pid)") }
            guard k.status == .active else { throw .config("\(o.fieldPath("primary")): key \(pid) is retired") }
            primary = k
        } else if keys.count == 1 {
            guard keys[0].status == .active else { throw .config("\(o.fieldPath("primary")): the only key is retired") }
            primary = keys[0]
        } else if keys.count > 1 {
            throw .config("\(o.fieldPath("primary")) is required when there are several keys")
        }
        let det = try o.stringArray("deterministic_contexts") ?? []
        for (i, c) in det.enumerated() {
            guard !c.isEmpty, c != "*", c.utf8.count <= FieldFormat.maxContextBytes else {
                throw .config("\(o.fieldPath("deterministic_contexts"))[\(i)] must be a non-empty context (or prefix ending in *), at most \(FieldFormat.maxContextBytes) bytes")
            }
        }
        let maxPlain = try o.int("max_plaintext_bytes", in: 0...Int64(FieldFormat.maxPlaintextBytes), default: Int64(FieldFormat.maxPlaintextBytes))
        var fernet: FernetKeyring? = nil
        if let fo = try o.object("fernet") {
            guard let arr = try fo.array("keys") else { throw .config("\(fo.fieldPath("keys")) is required") }
            try fo.finish()
            var secrets: [SecretBytes] = []
            for (i, v) in arr.enumerated() {
                let so = try ConfigObject(v, path: "\(fo.fieldPath("keys"))[\(i)]")
                secrets.append(try SecretRef.read(so, context: context).bytes)
            }
            fernet = try FernetKeyring(secrets: secrets)
        }
        try o.finish()  // unknown fields (typos) first: they explain a missing section best
        guard !keys.isEmpty || fernet != nil else { throw .config("\(o.path) needs keys (or fernet.keys)") }
        return FieldKeyring(keys: keys, primary: primary, deterministicContexts: det, maxPlaintextBytes: Int(maxPlain), fernet: fernet)
    }

    /// Replaces the keyring with the one described by `section` (the JSON text of a `fields`
    /// section, validated like at open). Secrets are read again from their files and
    /// variables. On error the current keyring stays. Emits `key_management/keys_reloaded`.
    public func reload(section bytes: UnsafeRawBufferPointer) throws(BitsecError) {
        do throws(BitsecError) {
            let doc: JSONValue
            do {
                doc = try JSONReader.parse(bytes, options: .init(maxBytes: Limits.maxConfigBytes, maxDepth: Limits.maxJSONDepth))
            } catch {
                throw BitsecError(error.status == .tooLarge ? .tooLarge : .config, "fields: \(error.detail)")
            }
            let o = try ConfigObject(doc, path: Self.sectionName)
            let fresh = try Self.readKeyring(o, context: configContext)
            let old = state.withLock { s -> FieldKeyring in
                let previous = s
                s = fresh
                return previous
            }
            _ = old  // released (and its keys wiped) when the last operation using it returns
            emitReload(result: "success", reason: nil, keyring: fresh)
        } catch {
            emitReload(result: "failure", reason: error.status == .config ? "config" : "error", keyring: nil)
            throw error
        }
    }

    private func emitReload(result: String, reason: String?, keyring: FieldKeyring?) {
        guard let audit, audit.automaticEventsEnabled else { return }
        var details: [(key: String, value: JSONValue)] = []
        if let keyring {
            details.append(("primary", keyring.primary.map { .string($0.id) } ?? .null))
            details.append(("keys", .array(keyring.keys.map { .string($0.id) })))
            details.append(("retired", .array(keyring.keys.filter { $0.status == .retired }.map { .string($0.id) })))
            details.append(("fernet_keys", .number(JSONNumber(int64: Int64(keyring.fernet?.keys.count ?? 0)))))
        }
        audit.emitAutomatic(AutomaticAuditEvent(type: "key_management", subtype: "keys_reloaded", result: result,
                                                reason: reason, resource: Self.sectionName, action: "reload", details: details))
    }

    // MARK: - Audit of failed decryptions

    /// The part of a context before the first `|` when it looks like a schema name
    /// (`table.column`): it names the column without row ids, tenants or values. Anything
    /// else is left out of audit events.
    static func auditResource(_ context: UnsafeRawBufferPointer) -> String? {
        var end = 0
        for b in context {
            if b == UInt8(ascii: "|") { break }
            let ok = (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A) || b == 0x2E || b == 0x5F || b == 0x2D || b == 0x3A
            guard ok, end < 128 else { return nil }
            end += 1
        }
        guard end > 0 else { return nil }
        return String(decoding: UnsafeRawBufferPointer(rebasing: context[0..<end]), as: UTF8.self)
    }

    @inline(__always)
    private func reportFailure(_ reason: FieldReason, format: String, keyId: String?, context: UnsafeRawBufferPointer, action: String) {
        guard let audit, audit.automaticEventsEnabled else { return }
        var details: [(key: String, value: JSONValue)] = [("format", .string(format))]
        if let keyId { details.append(("key_id", .string(keyId))) }
        audit.emitAutomatic(AutomaticAuditEvent(type: "data_access", subtype: "decrypt_failed", result: "failure",
                                                reason: reason.nameString, resource: Self.auditResource(context),
                                                action: action, details: details))
    }

    // MARK: - Operations

    /// Encrypts under the primary key. Returns the output size; writes only when `out` has room.
    public func encrypt(_ plaintext: UnsafeRawBufferPointer, context: UnsafeRawBufferPointer, flags: FieldFlags,
                        into out: UnsafeMutableRawBufferPointer?) throws(BitsecError) -> Int {
        try keyring.encrypt(plaintext, context: context, flags: flags, into: out)
    }

    /// Decrypts a token (either form). A failed decision is reported to the audit hook.
    public func decrypt(_ token: UnsafeRawBufferPointer, context: UnsafeRawBufferPointer,
                        into out: UnsafeMutableRawBufferPointer?) throws(BitsecError) -> FieldOutcome {
        var info = FieldKeyring.FieldTokenInfo()
        let o = try keyring.decrypt(token, context: context, into: out, info: &info)
        if o.reason != .ok { reportFailure(o.reason, format: info.deterministic ? "bitsec-siv" : "bitsec-gcm", keyId: info.keyId, context: context, action: "decrypt") }
        return o
    }

    /// Re-encrypts a token under the primary key, keeping its mode (randomised or
    /// deterministic) and context; `flags` may only ask for the binary output form. A token
    /// already under the primary, in the requested form, is verified and returned unchanged
    /// (`rewrapped` false). Returns the decision and the output size (nothing is written when
    /// it exceeds `out`).
    public func rewrap(_ token: UnsafeRawBufferPointer, context: UnsafeRawBufferPointer, flags: FieldFlags,
                       into out: UnsafeMutableRawBufferPointer?) throws(BitsecError) -> (outcome: FieldOutcome, rewrapped: Bool) {
        guard flags.isSubset(of: .binary) else { throw .invalid("flags: rewrap keeps the token's mode; only BITSEC_FIELD_BINARY is accepted") }
        let kr = keyring
        let primary = try kr.primaryKey()
        var info = FieldKeyring.FieldTokenInfo()
        var result: Result<(FieldOutcome, Bool), BitsecError> = .success((.failed(.malformed), false))
        withUnsafeTemporaryAllocation(byteCount: max(token.count, 1), alignment: 16) { tmp in
            defer { OPENSSL_cleanse(tmp.baseAddress, tmp.count) }
            do throws(BitsecError) {
                let o = try kr.decrypt(token, context: context, into: tmp, info: &info)
                guard o.reason == .ok else { result = .success((o, false)); return }
                let plain = UnsafeRawBufferPointer(rebasing: tmp[0..<o.length])
                let inputBinary = token.first == FieldFormat.versionGCM || token.first == FieldFormat.versionSIV
                if info.keyId == primary.id, inputBinary == flags.contains(.binary) {
                    if let out, let dst = out.baseAddress, out.count >= token.count, let src = token.baseAddress {
                        dst.copyMemory(from: src, byteCount: token.count)
                    }
                    result = .success((FieldOutcome(.ok, token.count), false))
                    return
                }
                var f = flags
                if info.deterministic { f.insert(.deterministic) }
                let n = try kr.encrypt(plain, context: context, flags: f, into: out)
                result = .success((FieldOutcome(.ok, n), true))
            } catch {
                result = .failure(error)
            }
        }
        let (o, rewrapped) = try result.get()
        if o.reason != .ok { reportFailure(o.reason, format: info.deterministic ? "bitsec-siv" : "bitsec-gcm", keyId: info.keyId, context: context, action: "rewrap") }
        return (o, rewrapped)
    }

    // MARK: - Fernet

    func requireFernet(_ kr: FieldKeyring) throws(BitsecError) -> FernetKeyring {
        guard let f = kr.fernet else { throw BitsecError(.notConfigured, "fields.fernet is not configured") }
        return f
    }

    /// A Fernet token (text) for `plaintext` at `now` (Unix seconds; 0 = now).
    public func fernetEncrypt(_ plaintext: UnsafeRawBufferPointer, now: Int64) throws(BitsecError) -> [UInt8] {
        try requireFernet(keyring).encrypt(plaintext, timestamp: Clock.resolve(now))
    }

    /// Opens a Fernet token; `ttl` 0 = no age limit.
    public func fernetDecrypt(_ token: UnsafeRawBufferPointer, ttl: Int64, now: Int64) throws(BitsecError) -> FernetKeyring.Opened {
        guard ttl >= 0 else { throw .invalid("ttl is negative") }
        return try fernetDecrypt(token, timeToLive: ttl > 0 ? ttl : nil, now: now)
    }

    /// Opens a Fernet token; `timeToLive` nil = no age limit, any other value (0 included) is
    /// applied exactly as cryptography's `ttl`.
    public func fernetDecrypt(_ token: UnsafeRawBufferPointer, timeToLive: Int64?, now: Int64) throws(BitsecError) -> FernetKeyring.Opened {
        let o = try requireFernet(keyring).decrypt(token, timeToLive: timeToLive, now: Clock.resolve(now))
        if o.reason != .ok { reportFailure(o.reason, format: "fernet", keyId: nil, context: UnsafeRawBufferPointer(start: nil, count: 0), action: "fernet_decrypt") }
        return o
    }

    /// MultiFernet.rotate: the token under the first Fernet key, same timestamp.
    public func fernetRotate(_ token: UnsafeRawBufferPointer) throws(BitsecError) -> (FieldReason, [UInt8]) {
        let r = try requireFernet(keyring).rotate(token)
        if r.0 != .ok { reportFailure(r.0, format: "fernet", keyId: nil, context: UnsafeRawBufferPointer(start: nil, count: 0), action: "fernet_rotate") }
        return r
    }

    /// Migration: opens a Fernet token (optional TTL) and encrypts its plaintext in the bitsec
    /// format under the primary key with `context`. Returns the decision and the output size.
    public func fernetMigrate(_ token: UnsafeRawBufferPointer, ttl: Int64, now: Int64, context: UnsafeRawBufferPointer,
                              flags: FieldFlags, into out: UnsafeMutableRawBufferPointer?) throws(BitsecError) -> FieldOutcome {
        guard ttl >= 0 else { throw .invalid("ttl is negative") }
        return try fernetMigrate(token, timeToLive: ttl > 0 ? ttl : nil, now: now, context: context, flags: flags, into: out)
    }

    /// As `fernetMigrate(_:ttl:...)` with `timeToLive` nil = no age limit, 0 and up exact.
    public func fernetMigrate(_ token: UnsafeRawBufferPointer, timeToLive: Int64?, now: Int64, context: UnsafeRawBufferPointer,
                              flags: FieldFlags, into out: UnsafeMutableRawBufferPointer?) throws(BitsecError) -> FieldOutcome {
        let kr = keyring
        var o = try requireFernet(kr).decrypt(token, timeToLive: timeToLive, now: Clock.resolve(now))
        defer { wipe(&o.plaintext) }
        guard o.reason == .ok else {
            reportFailure(o.reason, format: "fernet", keyId: nil, context: context, action: "fernet_migrate")
            return .failed(o.reason)
        }
        let n = try o.plaintext.withRawBytes { (p) throws(BitsecError) -> Int in try kr.encrypt(p, context: context, flags: flags, into: out) }
        return FieldOutcome(.ok, n)
    }

    // MARK: - Capability

    public func describe() -> JSONValue {
        let kr = keyring
        let keys: [JSONValue] = kr.keys.map { k in
            let source: String
            switch k.origin {
            case .secret(let s): source = s
            case .master: source = "derived from master"
            }
            return .object(JSONObject([("id", .string(k.id)), ("status", .string(k.status.rawValue)), ("source", .string(source))]))
        }
        return .object(JSONObject([
            ("format", .string("bitsec field v1 (AES-256-GCM), v2 (AES-256-SIV)")),
            ("primary", kr.primary.map { .string($0.id) } ?? .null),
            ("keys", .array(keys)),
            ("deterministic_contexts", .array(kr.deterministicContexts.map { .string($0) })),
            ("max_plaintext_bytes", .number(JSONNumber(int64: Int64(kr.maxPlaintextBytes)))),
            ("fernet_keys", .number(JSONNumber(int64: Int64(kr.fernet?.keys.count ?? 0)))),
        ]))
    }
}
