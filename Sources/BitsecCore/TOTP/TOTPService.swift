internal import COpenSSL

/// The `totp` capability: stateful TOTP verification (replay protection and throttling per
/// user, in process or shared through Redis), backup codes, and secrets sealed with the
/// `fields` capability (`sealSecret`, `verifySealed`).
///
/// Configuration (`"totp": {...}`, every field optional):
///
/// - `algorithm` (`SHA1` | `SHA256` | `SHA512`, default `SHA1`), `digits` (6–8, default 6),
///   `period` (1–86400 s, default 30), `t0` (default 0), `window` (0–10 steps, default 1);
/// - `issuer`: the issuer written into provisioning URIs made from this runtime;
/// - `min_secret_bits` (80–1024, default 80): the shortest existing secret accepted for
///   verification (new secrets are always at least 128 bits);
/// - `store` (`process` | `host` | `redis`, default the `store` section's default): where
///   used steps, failure counts and used backup codes live; `redis` needs the `redis`
///   section, `host` needs `store.host.name`. The older field `state` (`memory` = process,
///   `redis`) is still read; giving both is an error;
/// - `throttle`: `max_failures` (1–1000, default 5), `window_s` (1–86400, default 300):
///   attempts are counted by the rate limiter's `FailureWindow` (name `totp`, in the same
///   store), each one as a failure before its code is looked at (one atomic step, so
///   concurrent guesses never get past the limit); at `max_failures` failures within
///   `window_s` the user is refused until `window_s` after the oldest of them; a success
///   clears the count. With Redis state an outage is an error (`backendUnavailable`), never an acceptance;
/// - `backup_codes`: `count` (1–64, default 10), `length` (8–16, default 10), `iterations`
///   (PBKDF2, 1000–1000000, default 10000), `pepper` (a secret, optional), `used_ttl_s`
///   (how long a used code stays refused without the caller deleting it, default 30 days);
/// - `max_keys` (64–100000000, default 100000): the bound of each in-memory table of the
///   `process` and `host` stores (users' last accepted steps, used backup codes, failure counts). A live
///   step is never evicted, nor a backup-code claim younger than ten minutes (older ones go
///   oldest first when the table is full: `InProcessUseOnceSet`); when one of these tables is
///   full of entries that must be kept a user not in it is refused (a code answered as
///   replayed or used, the safe side) and `bitsec_table_full_refusals_total` counts it.
public final class TOTPService: Capability {
    public static let sectionName = "totp"

    public let params: OTPParameters
    public let window: Int
    public let issuer: String?
    public let minSecretBits: Int
    public let usesRedis: Bool
    /// Where the state lives.
    public let store: StoreKind
    public let throttlePolicy: FailureWindowPolicy
    public let backupCount: Int
    public let backupLength: Int
    public let backupIterations: Int64
    public let backupUsedTTL: Int64
    public let maxKeys: Int
    private let pepper: SecretBytes?
    private let failures: FailureWindow
    private let fields: FieldService?
    private let replay: any ReplayGuard
    private let usedBackupCodes: any UseOnceSet
    private let memoryTables: [BoundedTableStats]
    private let audit: (any AuditHook)?

    init(params: OTPParameters, window: Int, issuer: String?, minSecretBits: Int, redis: RedisPool?,
         throttlePolicy: FailureWindowPolicy, backupCount: Int, backupLength: Int, backupIterations: Int64,
         backupUsedTTL: Int64, pepper: SecretBytes?, audit: (any AuditHook)?, fields: FieldService? = nil,
         maxKeys: Int = 100_000, store: StoreKind? = nil, placement: TablePlacement = .process) throws(BitsecError) {
        self.params = params
        self.window = window
        self.issuer = issuer
        self.minSecretBits = minSecretBits
        self.usesRedis = redis != nil
        self.store = redis != nil ? .redis : (store ?? .process)
        self.throttlePolicy = throttlePolicy
        self.backupCount = backupCount
        self.backupLength = backupLength
        self.backupIterations = backupIterations
        self.backupUsedTTL = backupUsedTTL
        self.maxKeys = maxKeys
        self.pepper = pepper
        self.audit = audit
        self.fields = fields
        // TOTP emits its own audit events (totp_failed, throttled), so the window's `blocked`
        // event (keyed by the internal identity) is not wanted.
        failures = try FailureWindow(name: "totp", policy: throttlePolicy, redis: redis, audit: nil, maxKeys: maxKeys, auditType: "mfa",
                                     placement: placement)
        if let redis {
            replay = RedisReplayGuard(pool: redis)
            usedBackupCodes = RedisUseOnceSet(pool: redis)
            memoryTables = []
        } else {
            let r = try InProcessReplayGuard(maxEntries: maxKeys, placement: placement)
            let u = try InProcessUseOnceSet(maxEntries: maxKeys, ttlSeconds: backupUsedTTL, placement: placement)
            replay = r
            usedBackupCodes = u
            memoryTables = [r.stats, u.stats, failures.tableStats]
        }
    }

    public static func read(_ o: ConfigObject, context: CapabilityContext) throws(BitsecError) -> TOTPService {
        let algName = try o.choice("algorithm", ["SHA1", "SHA256", "SHA512"], default: "SHA1")
        let algorithm = OTPAlgorithm(name: algName) ?? .sha1
        let digits = try o.int("digits", in: 6...8, default: 6)
        let period = try o.int("period", in: 1...OTPLimits.maxPeriod, default: 30)
        let t0 = try o.int("t0", in: 0...OTPLimits.maxInstant, default: 0)
        let window = try o.int("window", in: 0...Int64(OTPLimits.maxWindow), default: 1)
        let issuer = try o.string("issuer")
        if let issuer, issuer.isEmpty || issuer.utf8.contains(UInt8(ascii: ":")) || issuer.utf8.count > 256 {
            throw .config("\(o.fieldPath("issuer")): must be 1 to 256 bytes without ':'")
        }
        let minBits = try o.int("min_secret_bits", in: 80...1024, default: Int64(OTPLimits.minVerifySecretBits))
        let store = try context.stores.settings.select(o, field: "store", oldField: "state", oldValues: ["memory": .process, "redis": .redis])
        let placement = try context.stores.placement(store, field: o.fieldPath("store"))
        var maxFailures: Int64 = 5, windowSeconds: Int64 = 300
        if let t = try o.object("throttle") {
            maxFailures = try t.int("max_failures", in: 1...1000, default: 5)
            windowSeconds = try t.int("window_s", in: 1...86_400, default: 300)
            try t.finish()
        }
        let policy = throttlePolicy(maxFailures: maxFailures, windowSeconds: windowSeconds)
        var count: Int64 = 10, length: Int64 = 10, iterations: Int64 = 10_000, usedTTL: Int64 = 30 * 86_400
        var pepper: SecretBytes? = nil
        if let b = try o.object("backup_codes") {
            count = try b.int("count", in: 1...Int64(BackupCodes.maxCount), default: 10)
            length = try b.int("length", in: Int64(BackupCodes.minLength)...Int64(BackupCodes.maxLength), default: 10)
            iterations = try b.int("iterations", in: BackupCodes.minIterations...BackupCodes.maxIterations, default: 10_000)
            usedTTL = try b.int("used_ttl_s", in: 60...(366 * 86_400), default: 30 * 86_400)
            if let p = try SecretRef.read(b, "pepper", context: context.config) {
                guard p.bytes.count >= 16 else { throw .config("\(b.fieldPath("pepper")): at least 16 bytes") }
                pepper = p.bytes
            }
            try b.finish()
        }
        let maxKeys = try o.int("max_keys", in: 64...100_000_000, default: Int64(StoreSettings.defaultMaxKeys(store)))
        try o.finish()
        return try TOTPService(params: OTPParameters(algorithm: algorithm, digits: Int(digits), period: period, t0: t0),
                               window: Int(window), issuer: issuer, minSecretBits: Int(minBits),
                               redis: store == .redis ? context.redis : nil, throttlePolicy: policy,
                               backupCount: Int(count), backupLength: Int(length), backupIterations: iterations,
                               backupUsedTTL: usedTTL, pepper: pepper, audit: context.audit, fields: context.fields,
                               maxKeys: Int(maxKeys), store: store, placement: placement)
    }

    /// The `FailureWindow` policy of the `throttle` settings: at most `maxFailures` failures
    /// within `windowSeconds`, then refused until `windowSeconds` after the oldest of them;
    /// while Redis is unavailable the window answers blocked (`deny`), which `verify` turns
    /// into a `backendUnavailable` error: never an acceptance, never a silent local count.
    public static func throttlePolicy(maxFailures: Int64 = 5, windowSeconds: Int64 = 300) -> FailureWindowPolicy {
        FailureWindowPolicy(maxFailures: maxFailures, windowSeconds: windowSeconds, blockSeconds: windowSeconds,
                            failurePolicy: .deny, blockAnchor: .oldestFailure)
    }

    public func describe() -> JSONValue {
        func n(_ v: Int64) -> JSONValue { .number(JSONNumber(int64: v)) }
        return .object(JSONObject([
            ("algorithm", .string(params.algorithm.name)),
            ("digits", n(Int64(params.digits))),
            ("period", n(params.period)),
            ("t0", n(params.t0)),
            ("window", n(Int64(window))),
            ("issuer", issuer.map { .string($0) } ?? .null),
            ("min_secret_bits", n(Int64(minSecretBits))),
            ("store", .string(store.rawValue)),
            ("max_keys", n(Int64(maxKeys))),
            ("sealed_secrets", .bool(fields != nil)),
            ("throttle", .object(JSONObject([("max_failures", n(throttlePolicy.maxFailures)), ("window_s", n(throttlePolicy.windowSeconds))]))),
            ("backup_codes", .object(JSONObject([
                ("count", n(Int64(backupCount))), ("length", n(Int64(backupLength))), ("iterations", n(backupIterations)),
                ("pepper", .bool(pepper != nil)), ("used_ttl_s", n(backupUsedTTL)),
            ]))),
        ]))
    }

    /// The in-memory tables of the `process` and `host` stores (none with `redis`: state is in Redis and
    /// an outage is an error, never a local decision).
    public var boundedTables: [BoundedTableStats] { memoryTables }

    /// How long a user's last accepted step is remembered: past the end of every window that
    /// could still contain it, plus a margin for clock differences between instances.
    var replayTTL: Int64 { params.period * Int64(2 * window + 2) + 60 }

    /// Who the state belongs to: `u:<user>`, or without a user `k:<hash of the secret>` (so a
    /// caller that passes no user still gets replay protection and throttling per secret;
    /// the hash is SHA-256 over a label and the secret, which does not reveal the secret).
    static func identity(user: String?, key: UnsafeRawBufferPointer) throws(BitsecError) -> String {
        if let user, !user.isEmpty { return "u:" + user }
        var md = [UInt8](repeating: 0, count: 32)
        var len: UInt32 = 0
        let label: [UInt8] = Array("bitsec totp identity v1\0".utf8)
        ERR_clear_error()
        guard let ctx = EVP_MD_CTX_new() else { throw OpenSSL.lastError("EVP_MD_CTX_new") }
        defer { EVP_MD_CTX_free(ctx) }
        let ok = md.withUnsafeMutableBytes { o in
            label.withUnsafeBytes { l in
                EVP_DigestInit_ex(ctx, EVP_sha256(), nil) == 1
                    && EVP_DigestUpdate(ctx, l.baseAddress, l.count) == 1
                    && EVP_DigestUpdate(ctx, key.baseAddress, key.count) == 1
                    && EVP_DigestFinal_ex(ctx, o.baseAddress?.assumingMemoryBound(to: UInt8.self), &len) == 1
            }
        }
        guard ok else { throw OpenSSL.lastError("SHA-256") }
        return "k:" + Hex.encode(md.prefix(16))
    }

    // MARK: - TOTP

    /// Verifies a code for a user at `at` (resolved Unix seconds): syntax, then the attempt
    /// reserved on the throttle (counted as a failure before the code is looked at), the
    /// window, then the replay check (an atomic compare-and-set of the user's last step).
    /// A success clears the user's failures (its own reservation with them); a wrong or
    /// replayed code stays counted.
    public func verify(secret: UnsafeRawBufferPointer, code: UnsafeRawBufferPointer, user: String?, at: Int64) throws(BitsecError) -> OTPDecision {
        guard OTPGenerator.isWellFormed(code, digits: params.digits) else {
            emit("totp_failed", .malformedCode, user: user)
            return OTPDecision(.malformedCode)
        }
        return try OTP.withSecret(secret, minBits: minSecretBits) { (key) throws(BitsecError) -> OTPDecision in
            let id = try Self.identity(user: user, key: key)
            let ticket: Int64
            switch try throttleReserve(id, at: at) {
            case .refused(let wait):
                emit("throttled", .throttled, user: user, retryAfter: wait)
                return OTPDecision(.throttled, retryAfter: wait)
            case .reserved(let t):
                ticket = t
            }
            let d = try unreservedOnError(id, ticket, at) { () throws(BitsecError) in
                try OTP.checkTOTP(key: key, code: code, params: params, window: window, at: at)
            }
            if d.accepted {
                if try unreservedOnError(id, ticket, at, { () throws(BitsecError) in
                    try replay.accept(id, step: d.step, ttlSeconds: replayTTL)
                }) {
                    try throttleSuccess(id, at: at)
                    return d
                }
                emit("totp_replayed", .replayed, user: user)
                return OTPDecision(.replayed, step: d.step)
            }
            emit("totp_failed", .wrongCode, user: user)
            return OTPDecision(.wrongCode)
        }
    }

    /// The current code of a secret with this runtime's parameters.
    public func now(secret: UnsafeRawBufferPointer, at: Int64) throws(BitsecError) -> [UInt8] {
        try OTP.totp(secret: secret, params: params, at: at)
    }

    /// A provisioning URI with this runtime's parameters and issuer.
    public func provisioningURI(secret: UnsafeRawBufferPointer, account: String) throws(BitsecError) -> [UInt8] {
        try ProvisioningURI.make(secret: secret, account: account, issuer: issuer, params: params)
    }

    // MARK: - Backup codes

    public func generateBackupCodes(count: Int?) throws(BitsecError) -> BackupCodes.Batch {
        try BackupCodes.generate(count: count ?? backupCount, length: backupLength, iterations: backupIterations, pepper: pepper)
    }

    /// Verifies a backup code against the caller's stored hashes (newline-separated) and
    /// consumes it: the decision's `step` is the index of the matched hash, which the caller
    /// deletes. A code is claimed (in process or in Redis) before it is reported accepted, so
    /// two concurrent uses cannot both succeed even before the caller has deleted it.
    public func verifyBackupCode(_ input: UnsafeRawBufferPointer, stored: String, user: String, at: Int64) throws(BitsecError) -> OTPDecision {
        guard !user.isEmpty else { throw .invalid("user is required for backup codes") }
        guard var code = BackupCodes.normalise(input) else {
            emit("totp_failed", .malformedCode, user: user, factor: "backup_code")
            return OTPDecision(.malformedCode)
        }
        defer { wipe(&code) }
        let id = "u:" + user
        let ticket: Int64
        switch try throttleReserve(id, at: at) {
        case .refused(let wait):
            emit("throttled", .throttled, user: user, retryAfter: wait, factor: "backup_code")
            return OTPDecision(.throttled, retryAfter: wait)
        case .reserved(let t):
            ticket = t
        }
        let match = try unreservedOnError(id, ticket, at) { () throws(BitsecError) in
            try BackupCodes.match(code, stored: stored, pepper: pepper)
        }
        if let m = match {
            if try unreservedOnError(id, ticket, at, { () throws(BitsecError) in
                try usedBackupCodes.claim(user + "\n" + m.hash, ttlSeconds: backupUsedTTL)
            }) {
                try throttleSuccess(id, at: at)
                return OTPDecision(.ok, step: Int64(m.index))
            }
            emit("totp_replayed", .replayed, user: user, factor: "backup_code")
            return OTPDecision(.replayed, step: Int64(m.index))
        }
        emit("totp_failed", .wrongCode, user: user, factor: "backup_code")
        return OTPDecision(.wrongCode)
    }

    // MARK: - Throttle (the rate limiter's FailureWindow)

    /// Reserves the attempt before the code is looked at: refuses a user who is blocked, or
    /// counts the attempt as a failure, in one atomic step of the store (`FailureWindow.reserve`,
    /// as the login guard reserves a login). So N concurrent guesses never get past
    /// `max_failures`: checking first and counting after the code check let every request in
    /// flight pass the check before any of them was counted. Returns the seconds to wait when
    /// refused (blocked, or a new user while the table is full of live entries: the safe
    /// side), nil when the attempt may go ahead. While Redis is unavailable the window's
    /// `deny` answer is not the user's doing, so it is an error rather than `throttled`.
    private func throttleReserve(_ id: String, at: Int64) throws(BitsecError) -> Reservation {
        let r = try failures.reserve(key: id, at: at)
        if r.degraded {
            throw .backend("redis unavailable: the totp failure count could not be read or updated; nothing was accepted")
        }
        return r.allowed ? .reserved(r.ticketMs) : .refused(max(1, TokenBucket.ceilDiv(r.retryAfterMs, 1000)))
    }

    /// What `throttleReserve` answered: the attempt's ticket, or the seconds to wait.
    private enum Reservation { case reserved(Int64), refused(Int64) }

    /// Runs a step after the reservation; when it fails with an error (a stored hash that does
    /// not parse, Redis unreachable between two calls) nothing was decided, so the attempt is
    /// given back (best effort) rather than left counted as a failure: errors are not
    /// guesses, and five in a row would otherwise block a user who holds a valid code.
    private func unreservedOnError<R>(_ id: String, _ ticket: Int64, _ at: Int64,
                                      _ body: () throws(BitsecError) -> R) throws(BitsecError) -> R {
        do {
            return try body()
        } catch {
            _ = try? failures.refund(key: id, ticketMs: ticket, at: at)
            throw error
        }
    }

    /// Clears the user's failures after a success (this attempt's reservation with them). The
    /// code is already accepted (its step recorded), so a Redis outage here leaves the
    /// failures counted (the safe side) rather than turning the acceptance into an error.
    private func throttleSuccess(_ id: String, at: Int64) throws(BitsecError) {
        _ = try failures.recordSuccess(key: id, at: at)
    }

    /// Clears a user's failures and any block (administrators, support tools, tests).
    public func resetThrottle(user: String) throws(BitsecError) {
        guard !user.isEmpty else { throw .invalid("user is required") }
        try failures.reset(key: "u:" + user)
    }

    // MARK: - Sealed secrets (field encryption)

    /// The field-encryption context of a user's sealed secret: `bitsec.totp.secret|<user>`.
    public static let sealContextPrefix = "bitsec.totp.secret|"

    /// Upper bound of a sealed secret's text (BITSEC_TOTP_MAX_SEALED_SECRET_BYTES).
    public static let maxSealedSecretBytes = 512

    static func sealContext(_ user: String) -> [UInt8] { Array((sealContextPrefix + user).utf8) }

    private func requireFields() throws(BitsecError) -> FieldService {
        guard let fields else {
            throw BitsecError(.notConfigured, "sealed TOTP secrets need field encryption: the fields section is not configured")
        }
        return fields
    }

    /// Seals a base32 secret for `user`: checks it as `verify` would (base32, at least
    /// `min_secret_bits`), normalises it (upper case, no padding) and encrypts that text with
    /// the `fields` capability's primary key (randomised AES-256-GCM, text form) under the
    /// context `bitsec.totp.secret|<user>`. The result is what the caller stores.
    public func sealSecret(_ secret: UnsafeRawBufferPointer, user: String) throws(BitsecError) -> [UInt8] {
        let f = try requireFields()
        guard !user.isEmpty else { throw .invalid("user is required to seal a secret") }
        var canonical = try OTP.withSecret(secret, minBits: minSecretBits) { (key) throws(BitsecError) -> [UInt8] in Base32.encode(key) }
        defer { wipe(&canonical) }
        let context = Self.sealContext(user)
        return try canonical.withRawBytes { (plain) throws(BitsecError) -> [UInt8] in
            try context.withRawBytes { (ctx) throws(BitsecError) -> [UInt8] in
                let n = try f.encrypt(plain, context: ctx, flags: [], into: nil)
                var out = [UInt8](repeating: 0, count: n)
                let m = try out.withMutableRawBytes { (o) throws(BitsecError) -> Int in try f.encrypt(plain, context: ctx, flags: [], into: o) }
                guard m == n else { throw .internalError("sealed secret size changed (key rotation during the call?)") }
                return out
            }
        }
    }

    /// Opens a sealed secret of `user` and runs `body` with the base32 text, wiped afterwards.
    /// A token that does not open is an error, never a decision: `malformed` when it is not a
    /// token, was altered, or was sealed for another user (wrong context); `config` when its
    /// key is unknown to or retired in the keyring. The field service audits the failure.
    public func withUnsealedSecret<R>(_ sealed: UnsafeRawBufferPointer, user: String,
                                      _ body: (UnsafeRawBufferPointer) throws(BitsecError) -> R) throws(BitsecError) -> R {
        let f = try requireFields()
        guard !user.isEmpty else { throw .invalid("user is required for a sealed secret") }
        guard sealed.count <= Self.maxSealedSecretBytes else {
            throw .tooLarge("sealed secret: \(sealed.count) bytes exceeds the limit of \(Self.maxSealedSecretBytes)")
        }
        // A token is longer than its plaintext, so its size bounds the secret's.
        var plain = [UInt8](repeating: 0, count: max(sealed.count, 1))
        defer { wipe(&plain) }
        let context = Self.sealContext(user)
        let o = try context.withRawBytes { (ctx) throws(BitsecError) -> FieldOutcome in
            try plain.withMutableRawBytes { (out) throws(BitsecError) -> FieldOutcome in try f.decrypt(sealed, context: ctx, into: out) }
        }
        switch o.reason {
        case .ok:
            guard o.length <= plain.count else { throw .internalError("sealed secret larger than its token") }
            return try plain.withRawBytes { (p) throws(BitsecError) -> R in try body(UnsafeRawBufferPointer(rebasing: p[0..<o.length])) }
        case .wrongContext:
            throw .malformed("sealed secret: wrong_context (it was sealed for another user, or is not a sealed TOTP secret)")
        case .unknownKey, .retiredKey:
            throw .config("sealed secret: \(o.reason.nameString) (the fields keyring cannot open it)")
        default:
            throw .malformed("sealed secret: \(o.reason.nameString) (not a sealed secret, or altered)")
        }
    }

    /// `verify` with a sealed secret (see `sealSecret`): the code's syntax first (malformed
    /// codes are decided without opening anything), then the secret is opened for `user`,
    /// verified exactly as `verify` does (throttle, window, replay, audit) and wiped.
    public func verifySealed(sealed: UnsafeRawBufferPointer, code: UnsafeRawBufferPointer, user: String, at: Int64) throws(BitsecError) -> OTPDecision {
        _ = try requireFields()
        guard !user.isEmpty else { throw .invalid("user is required for a sealed secret") }
        guard OTPGenerator.isWellFormed(code, digits: params.digits) else {
            emit("totp_failed", .malformedCode, user: user)
            return OTPDecision(.malformedCode)
        }
        return try withUnsealedSecret(sealed, user: user) { (secret) throws(BitsecError) -> OTPDecision in
            try verify(secret: secret, code: code, user: user, at: at)
        }
    }

    // MARK: - Audit

    @inline(__always)
    private func emit(_ subtype: String, _ reason: OTPReason, user: String?, retryAfter: Int64 = 0, factor: String = "totp") {
        guard let audit, audit.automaticEventsEnabled else { return }
        var details: [(key: String, value: JSONValue)] = [("factor", .string(factor))]
        if retryAfter > 0 { details.append(("retry_after", .number(JSONNumber(int64: retryAfter)))) }
        audit.emitAutomatic(AutomaticAuditEvent(type: "mfa", subtype: subtype, result: reason == .throttled ? "denied" : "failure",
                                                reason: reason.name, actor: user.flatMap { $0.isEmpty ? nil : $0 }, details: details))
    }
}
