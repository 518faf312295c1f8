internal import Synchronization

/// The `csrf` capability (OWASP CSRF Prevention Cheat Sheet): synchronizer tokens bound to
/// a session, signed double-submit cookies bound to a session binding value, and the
/// `Origin` / `Sec-Fetch-Site` check of unsafe requests.
///
/// Configuration (`"csrf": {...}`):
///
/// - `key` (required): a secret reference of exactly 32 bytes (`"encoding": "hex"` or
///   `"base64"`); it signs new tokens;
/// - `previous_keys` (up to 4 secret references, default none): still accepted when
///   checking, so a rotation does not refuse the tokens already in pages;
/// - `max_age_s` (60–31536000, default 86400): a token older than this is `expired`
///   (the default is a session's default absolute lifetime);
/// - `allowed_origins` (array of `http(s)://host[:port]`, default empty): origins whose
///   unsafe requests are accepted by the origin check;
/// - `missing_origin` (`refuse` | `allow`, default `refuse`): the origin check of an
///   unsafe request that carries neither `Origin` nor `Sec-Fetch-Site`.
///
/// The keys are replaced at run time with `reloadKeys` (`bitsec_csrf_reload_keys`).
public final class CSRFService: Capability {
    public static let sectionName = "csrf"
    public static let maxPreviousKeys = 4
    /// Clock skew tolerated on a token's issue time (seconds).
    public static let futureLeeway: Int64 = 60

    private let keyring: Mutex<CSRFKeyring>
    public let maxAge: Int64
    public let origins: CSRFOriginPolicy
    private let configContext: ConfigContext
    private let audit: (any AuditHook)?

    init(keyring: CSRFKeyring, maxAge: Int64, origins: CSRFOriginPolicy, context: ConfigContext, audit: (any AuditHook)?) {
        self.keyring = Mutex(keyring)
        self.maxAge = maxAge
        self.origins = origins
        self.configContext = context
        self.audit = audit
    }

    public static func read(_ o: ConfigObject, context: CapabilityContext) throws(BitsecError) -> CSRFService {
        let ring = try CSRFKeyring.read(o, context: context.config)
        let maxAge = try o.int("max_age_s", in: 60...31_536_000, default: 86_400)
        var allowed = Set<String>()
        for (i, s) in (try o.stringArray("allowed_origins") ?? []).enumerated() {
            guard let n = CSRFOriginPolicy.normalise(s) else {
                throw .config("\(o.fieldPath("allowed_origins"))[\(i)]: not an origin (http(s)://host[:port], no path, no wildcard)")
            }
            allowed.insert(n)
        }
        let missing = try o.choice("missing_origin", ["refuse", "allow"], default: "refuse")
        try o.finish()
        return CSRFService(keyring: ring, maxAge: maxAge, origins: CSRFOriginPolicy(allowed: allowed, allowMissing: missing == "allow"),
                           context: context.config, audit: context.audit)
    }

    public func describe() -> JSONValue {
        let ring = keyring.withLock { $0 }
        return .object(JSONObject([
            ("keys", .number(JSONNumber(int64: Int64(ring.count)))),
            ("max_age_s", .number(JSONNumber(int64: maxAge))),
            ("allowed_origins", .array(origins.allowed.sorted().map { .string($0) })),
            ("missing_origin", .string(origins.allowMissing ? "allow" : "refuse")),
        ]))
    }

    // MARK: - Tokens

    static func checkBinding(_ binding: UnsafeRawBufferPointer) throws(BitsecError) {
        guard binding.count > 0 else { throw .invalid("the session binding is empty") }
        guard binding.count <= CSRFToken.maxBindingBytes else {
            throw .tooLarge("the session binding exceeds \(CSRFToken.maxBindingBytes) bytes")
        }
    }

    /// A new token of `kind` bound to `binding` (a session identifier or binding value),
    /// issued at `at` (0 = now). Always `CSRFToken.tokenBytes` ASCII bytes.
    public func issue(kind: CSRFTokenKind, binding: UnsafeRawBufferPointer, at: Int64 = 0) throws(BitsecError) -> [UInt8] {
        try Self.checkBinding(binding)
        let now = Clock.resolve(at)
        guard now >= 0 else { throw .invalid("at is negative") }
        guard let h = CSRFToken.bindingHash(binding) else { throw OpenSSL.lastError("SHA-256") }
        var raw = [UInt8](repeating: 0, count: CSRFToken.rawBytes)
        raw[0] = CSRFToken.version
        for i in 0..<8 { raw[1 + i] = UInt8(truncatingIfNeeded: UInt64(now) >> UInt64(56 - 8 * i)) }
        try raw.withMutableRawBytes { (r) throws(BitsecError) in
            try OpenSSL.randomBytes(UnsafeMutableRawBufferPointer(rebasing: r[9..<(9 + CSRFToken.nonceBytes)]))
        }
        let headEnd = 9 + CSRFToken.nonceBytes
        let ring = keyring.withLock { $0 }
        guard let key = ring.keys.first, let mac = key.mac(CSRFToken.macInput(kind: kind, bindingHash: h, head: raw[0..<headEnd])) else {
            throw OpenSSL.lastError("HMAC-SHA256")
        }
        raw.replaceSubrange(headEnd..<CSRFToken.rawBytes, with: mac)
        return Base64.encode(raw)
    }

    /// Checks a presented token of `kind` for `binding` at `at` (0 = now): the MAC under
    /// any configured key (compared in constant time), then the age. A forged token is
    /// `invalid`, never `expired`.
    public func verify(kind: CSRFTokenKind, binding: UnsafeRawBufferPointer, token: UnsafeRawBufferPointer,
                       at: Int64 = 0) throws(BitsecError) -> CSRFReason {
        try Self.checkBinding(binding)
        if token.count == 0 { return .missing }
        guard token.count <= CSRFToken.maxTokenBytes, let parsed = CSRFToken.parse(token) else { return .malformed }
        let raw = parsed.raw, issued = parsed.issuedAt
        guard let h = CSRFToken.bindingHash(binding) else { throw OpenSSL.lastError("SHA-256") }
        let headEnd = 9 + CSRFToken.nonceBytes
        let input = CSRFToken.macInput(kind: kind, bindingHash: h, head: raw[0..<headEnd])
        let presented = Array(raw[headEnd...])
        let ring = keyring.withLock { $0 }
        var ok = false
        for key in ring.keys {
            guard let mac = key.mac(input) else { throw OpenSSL.lastError("HMAC-SHA256") }
            if OpenSSL.constantTimeEqual(mac, presented) { ok = true }
        }
        guard ok else { return .invalid }
        let now = Clock.resolve(at)
        let (late, lateOverflow) = now.addingReportingOverflow(Self.futureLeeway)
        if !lateOverflow && issued > late { return .expired }
        let (age, overflow) = now.subtractingReportingOverflow(issued)
        if overflow || age >= maxAge { return .expired }
        return .valid
    }

    /// The signed double-submit check: the cookie's token and the submitted one (header or
    /// form field) must be equal (constant time) and the cookie's token must verify for
    /// `binding`. An empty submitted token is `missing`; an empty cookie is `missing` too.
    public func verifyDoubleSubmit(binding: UnsafeRawBufferPointer, cookie: UnsafeRawBufferPointer, submitted: UnsafeRawBufferPointer,
                                   at: Int64 = 0) throws(BitsecError) -> CSRFReason {
        try Self.checkBinding(binding)
        if cookie.count == 0 || submitted.count == 0 { return .missing }
        guard cookie.count <= CSRFToken.maxTokenBytes, submitted.count <= CSRFToken.maxTokenBytes else { return .malformed }
        guard OpenSSL.constantTimeEqual(cookie, submitted) else { return .mismatch }
        return try verify(kind: .doubleSubmit, binding: binding, token: cookie, at: at)
    }

    // MARK: - Keys

    /// Replaces the keys from a JSON object `{"key": ..., "previous_keys": [...]}` (the same
    /// fields as the section; secrets as in the configuration, inline ones only when the
    /// runtime allows them). Concurrent checks see the old or the new keyring, never a mix.
    /// An audit event (`key_management` / `keys_reloaded`, resource `csrf`) records each
    /// attempt, with the number of keys, never key material.
    public func reloadKeys(_ bytes: UnsafeRawBufferPointer) throws(BitsecError) {
        do throws(BitsecError) {
            let doc: JSONValue
            do {
                doc = try JSONReader.parse(bytes, options: .init(maxBytes: Limits.maxConfigBytes, maxDepth: Limits.maxJSONDepth))
            } catch {
                throw BitsecError(error.status == .tooLarge ? .tooLarge : .config, "csrf keys: \(error.detail)")
            }
            let o = try ConfigObject(doc, path: Self.sectionName)
            let fresh = try CSRFKeyring.read(o, context: configContext)
            try o.finish()
            keyring.withLock { $0 = fresh }
            emitReload(result: "success", reason: nil, keys: fresh.count)
        } catch {
            emitReload(result: "failure", reason: error.status == .config ? "config" : "error", keys: nil)
            throw error
        }
    }

    private func emitReload(result: String, reason: String?, keys: Int?) {
        guard let audit, audit.automaticEventsEnabled else { return }
        var details: [(key: String, value: JSONValue)] = []
        if let keys { details.append(("keys", .number(JSONNumber(int64: Int64(keys))))) }
        audit.emitAutomatic(AutomaticAuditEvent(type: "key_management", subtype: "keys_reloaded", result: result,
                                                reason: reason, resource: Self.sectionName, action: "reload", details: details))
    }
}
