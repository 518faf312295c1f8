internal import COpenSSL

/// The `totp` capability: stateful TOTP verification (replay protection and throttling per
/// user, in process or shared through Redis) and backup codes.
///
/// Configuration (`"totp": {...}`, every field optional):
///
/// - `algorithm` (`SHA1` | `SHA256` | `SHA512`, default `SHA1`), `digits` (6–8, default 6),
///   `period` (1–86400 s, default 30), `t0` (default 0), `window` (0–10 steps, default 1);
/// - `issuer`: the issuer written into provisioning URIs made from this runtime;
/// - `min_secret_bits` (80–1024, default 80): the shortest existing secret accepted for
///   verification (new secrets are always at least 128 bits);
/// - `state` (`memory` | `redis`, default `memory`): where used steps, failure counts and
///   used backup codes live; `redis` needs the `redis` section;
/// - `throttle`: `max_failures` (1–1000, default 5), `window_s` (1–86400, default 300);
/// - `backup_codes`: `count` (1–64, default 10), `length` (8–16, default 10), `iterations`
///   (PBKDF2, 1000–1000000, default 10000), `pepper` (a secret, optional), `used_ttl_s`
///   (how long a used code stays refused without the caller deleting it, default 30 days).
public final class TOTPService: Capability {
    public static let sectionName = "totp"

    public let params: OTPParameters
    public let window: Int
    public let issuer: String?
    public let minSecretBits: Int
    public let usesRedis: Bool
    public let throttlePolicy: ThrottlePolicy
    public let backupCount: Int
    public let backupLength: Int
    public let backupIterations: Int64
    public let backupUsedTTL: Int64
    private let pepper: SecretBytes?
    private let throttle: any FailureThrottle
    private let replay: any ReplayGuard
    private let usedBackupCodes: any UseOnceSet
    private let audit: (any AuditHook)?

    init(params: OTPParameters, window: Int, issuer: String?, minSecretBits: Int, redis: RedisPool?,
         throttlePolicy: ThrottlePolicy, backupCount: Int, backupLength: Int, backupIterations: Int64,
         backupUsedTTL: Int64, pepper: SecretBytes?, audit: (any AuditHook)?) {
        self.params = params
        self.window = window
        self.issuer = issuer
        self.minSecretBits = minSecretBits
        self.usesRedis = redis != nil
        self.throttlePolicy = throttlePolicy
        self.backupCount = backupCount
        self.backupLength = backupLength
        self.backupIterations = backupIterations
        self.backupUsedTTL = backupUsedTTL
        self.pepper = pepper
        self.audit = audit
        if let redis {
            throttle = RedisThrottle(policy: throttlePolicy, pool: redis)
            replay = RedisReplayGuard(pool: redis)
            usedBackupCodes = RedisUseOnceSet(pool: redis)
        } else {
            throttle = InProcessThrottle(policy: throttlePolicy)
            replay = InProcessReplayGuard()
            usedBackupCodes = InProcessUseOnceSet()
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
        let state = try o.choice("state", ["memory", "redis"], default: "memory")
        if state == "redis" && context.redis == nil {
            throw .config("\(o.fieldPath("state")): redis needs the redis section")
        }
        var policy = ThrottlePolicy()
        if let t = try o.object("throttle") {
            policy.maxFailures = try t.int("max_failures", in: 1...1000, default: 5)
            policy.windowSeconds = try t.int("window_s", in: 1...86_400, default: 300)
            try t.finish()
        }
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
        try o.finish()
        return TOTPService(params: OTPParameters(algorithm: algorithm, digits: Int(digits), period: period, t0: t0),
                           window: Int(window), issuer: issuer, minSecretBits: Int(minBits),
                           redis: state == "redis" ? context.redis : nil, throttlePolicy: policy,
                           backupCount: Int(count), backupLength: Int(length), backupIterations: iterations,
                           backupUsedTTL: usedTTL, pepper: pepper, audit: context.audit)
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
            ("state", .string(usesRedis ? "redis" : "memory")),
            ("throttle", .object(JSONObject([("max_failures", n(throttlePolicy.maxFailures)), ("window_s", n(throttlePolicy.windowSeconds))]))),
            ("backup_codes", .object(JSONObject([
                ("count", n(Int64(backupCount))), ("length", n(Int64(backupLength))), ("iterations", n(backupIterations)),
                ("pepper", .bool(pepper != nil)), ("used_ttl_s", n(backupUsedTTL)),
            ]))),
        ]))
    }

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

    /// Verifies a code for a user at `at` (resolved Unix seconds): syntax, throttle, the
    /// window, then the replay check (an atomic compare-and-set of the user's last step).
    /// A success resets the user's failures; a wrong or replayed code counts as a failure.
    public func verify(secret: UnsafeRawBufferPointer, code: UnsafeRawBufferPointer, user: String?, at: Int64) throws(BitsecError) -> OTPDecision {
        guard OTPGenerator.isWellFormed(code, digits: params.digits) else {
            emit("totp_failed", .malformedCode, user: user)
            return OTPDecision(.malformedCode)
        }
        return try OTP.withSecret(secret, minBits: minSecretBits) { (key) throws(BitsecError) -> OTPDecision in
            let id = try Self.identity(user: user, key: key)
            let before = try throttle.status(id, at: at)
            if case .throttled(let r) = before {
                emit("throttled", .throttled, user: user, retryAfter: r)
                return OTPDecision(.throttled, retryAfter: r)
            }
            let d = try OTP.checkTOTP(key: key, code: code, params: params, window: window, at: at)
            if d.accepted {
                if try replay.accept(id, step: d.step, ttlSeconds: replayTTL) {
                    if before != .open(failures: 0) { try throttle.reset(id) }
                    return d
                }
                _ = try throttle.recordFailure(id, at: at)
                emit("totp_replayed", .replayed, user: user)
                return OTPDecision(.replayed, step: d.step)
            }
            switch try throttle.recordFailure(id, at: at) {
            case .throttled(let r):
                emit("throttled", .throttled, user: user, retryAfter: r)
                return OTPDecision(.throttled, retryAfter: r)
            case .open:
                emit("totp_failed", .wrongCode, user: user)
                return OTPDecision(.wrongCode)
            }
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
        let before = try throttle.status(id, at: at)
        if case .throttled(let r) = before {
            emit("throttled", .throttled, user: user, retryAfter: r, factor: "backup_code")
            return OTPDecision(.throttled, retryAfter: r)
        }
        if let m = try BackupCodes.match(code, stored: stored, pepper: pepper) {
            if try usedBackupCodes.claim(user + "\n" + m.hash, ttlSeconds: backupUsedTTL) {
                if before != .open(failures: 0) { try throttle.reset(id) }
                return OTPDecision(.ok, step: Int64(m.index))
            }
            _ = try throttle.recordFailure(id, at: at)
            emit("totp_replayed", .replayed, user: user, factor: "backup_code")
            return OTPDecision(.replayed, step: Int64(m.index))
        }
        switch try throttle.recordFailure(id, at: at) {
        case .throttled(let r):
            emit("throttled", .throttled, user: user, retryAfter: r, factor: "backup_code")
            return OTPDecision(.throttled, retryAfter: r)
        case .open:
            emit("totp_failed", .wrongCode, user: user, factor: "backup_code")
            return OTPDecision(.wrongCode)
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
