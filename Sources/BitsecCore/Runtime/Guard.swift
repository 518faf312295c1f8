internal import COpenSSL

/// The decisions of one protected request in one call (`bitsec_guard_check`): the bearer
/// token (through the verified-token cache), the rate-limit take, the scopes the token must
/// carry, then the permission (its principal from the verified claims). Each step decides exactly
/// as its own call does (`TokenService.verify`, `PermissionService.check`,
/// `RateLimitService.take`), including their audit events. The take comes right after the
/// token, before the scopes and the permission: every request counts against its bucket,
/// refused ones included (`user:<sub>` for a verified token with `flagKeyBySubject`, else
/// the caller's key), so a caller cannot send refused requests without limit, each with its
/// audit record. Precedence of the answer: rate limited (429), then a refused token (401),
/// a missing scope or a denied permission (403), then an unreachable rate-limit store (503,
/// only for a request that would otherwise be allowed).
public enum RequestGuard {
    /// Decision codes (BITSEC_GUARD_*).
    public enum Decision: Int32, Sendable {
        case allowed = 0
        case tokenRefused = 1
        case scopeMissing = 2
        case permissionDenied = 3
        case rateLimited = 4
        case rateUnavailable = 5
    }

    /// Input flags (BITSEC_GUARD_FLAG_*).
    public static let flagKeyBySubject: UInt32 = 1
    public static let flagTokenAdvisory: UInt32 = 2
    public static let knownFlags: UInt32 = 3
    /// "Not checked" in the result's reason fields.
    public static let notChecked: Int32 = -1

    public struct Outcome: Sendable {
        public var decision: Decision = .allowed
        public var httpStatus: Int32 = 200
        public var tokenReason: Int32 = RequestGuard.notChecked
        public var permissionReason: Int32 = RequestGuard.notChecked
        public var permissionRule: Int32 = -1
        public var rateReason: Int32 = RequestGuard.notChecked
        public var rateLimit: Int64 = 0
        public var rateRemaining: Int64 = 0
        public var rateResetAfter: Int64 = 0
        public var rateRetryAfter: Int64 = 0
        public var rateFlags: Int64 = 0
        /// The verified token's result document (as `bitsec_verify_token` writes it).
        public var claims: [UInt8]? = nil
        public init() {}
    }

    /// Runs the checks. `token` nil: no token (the permission then cannot be checked);
    /// `permission` nil: none; `category` nil: no rate limit; `key`: the rate-limit key used
    /// unless `flagKeyBySubject` and the token verified with a non-empty `sub`.
    public static func check(_ r: Runtime, token: UnsafeRawBufferPointer?, scopes: UnsafeRawBufferPointer,
                             permission: ByteSlice?, context: ResourceContext, category: RateLimitCategory?,
                             key: String?, cost: Int64, at: Int64, flags: UInt32) throws(BitsecError) -> Outcome {
        var out = Outcome()
        let advisory = flags & flagTokenAdvisory != 0
        // The arguments first: an invalid call decides nothing and takes nothing.
        if scopes.count > 0 || permission != nil {
            guard !advisory, token != nil else {
                throw .invalid("scopes and permission need a token (and not BITSEC_GUARD_FLAG_TOKEN_ADVISORY)")
            }
            if scopes.count > 0 {
                guard UTF8Validation.isValid(scopes.bindMemory(to: UInt8.self)) else { throw .invalid("scopes is not valid UTF-8") }
            }
        }
        var verified: VerifiedClaims? = nil
        var refused = false
        if let token {
            let tokens = try r.require(r.tokens)
            do {
                let v = try tokens.verify(token, at: at)
                out.tokenReason = Int32(v.reason.rawValue)
                if v.reason == .valid, let c = v.claims {
                    verified = c
                    out.claims = c.result
                } else if !advisory {
                    refused = true
                }
            } catch where advisory && error.status == .backendUnavailable {
                // Advisory token (it only keys the rate limit): an undecidable one is no user.
                out.tokenReason = notChecked
            }
        }
        // What the permission needs, read before the take: a principal the library cannot
        // read (a NUL in a claim, claims over the limit) or a runtime without permissions is
        // an error that takes nothing, never an error after the bucket was charged.
        var permissions: PermissionService? = nil
        var packed: [UInt8]? = nil
        if permission != nil, let c = verified {
            permissions = try r.require(r.permissions)
            packed = try c.packedPrincipal()
        }
        var rateUnavailable = false
        if let category {
            let svc = try r.require(r.rateLimits)
            var k = key
            if flags & flagKeyBySubject != 0, let sub = verified?.sub, !sub.isEmpty {
                k = try subjectKey(sub, tenant: verified?.tenant)
            }
            if let k {
                do {
                    let d = try svc.take(in: category, key: k, cost: cost, at: at)
                    out.rateReason = Int32(truncatingIfNeeded: d.reason.rawValue)
                    out.rateLimit = d.limit
                    out.rateRemaining = d.remaining
                    out.rateResetAfter = d.resetAfter
                    out.rateRetryAfter = d.retryAfter
                    out.rateFlags = d.degraded ? RateLimitDecision.flagDegraded : 0
                    if !d.allowed {
                        out.decision = .rateLimited
                        out.httpStatus = 429
                        return out
                    }
                } catch where error.status == .backendUnavailable {
                    rateUnavailable = true
                }
            } else if !refused {
                throw .invalid("key is empty")
            }
            // (a refused token without a key of the caller's: no bucket to count it in)
        }
        if refused {
            out.decision = .tokenRefused
            out.httpStatus = 401
            return out
        }
        if let c = verified, scopes.count > 0 || permission != nil {
            if scopes.count > 0 {
                // Byte for byte (a Set<String> would equate canonically equivalent names), and
                // without building Strings or a Set: scope lists are short.
                let have = c.scopes
                for s in scopes.split(separator: 0x20) where !have.contains(where: { $0.sameBytes(s) }) {
                    out.decision = .scopeMissing
                    out.httpStatus = 403
                    return out
                }
            }
            if let permission, let svc = permissions, let packed {
                let d = try packed.withRawBytes { (raw) throws(BitsecError) -> PermissionDecision in
                    try svc.check(try PrincipalView.parse(raw), permission: permission, context)
                }
                out.permissionReason = Int32(d.reason.rawValue)
                out.permissionRule = Int32(clamping: d.rule)
                if !d.allowed {
                    out.decision = .permissionDenied
                    out.httpStatus = 403
                    return out
                }
            }
        }
        if rateUnavailable {
            out.decision = .rateUnavailable
            out.httpStatus = 503
        }
        return out
    }

    /// The verified user's rate-limit key: `user:<sub>` without a tenant, and
    /// `tenant:<n>:<tenant>:user:<sub>` with one (`n`: the tenant's length in UTF-8 bytes), so
    /// that the same subject in two tenants has two buckets: a user of one tenant cannot
    /// spend the budget of a namesake in another. The two forms never meet (their prefixes
    /// differ, and the length makes the tenant's end unambiguous). `sha256:<hex of it>` when
    /// longer than a rate-limit key may be. The Python binding's rate-limit dependencies and
    /// cookie routes use the same key for the same user (`bitsec.fastapi`).
    public static func subjectKey(_ sub: String, tenant: String? = nil) throws(BitsecError) -> String {
        let key: String
        if let tenant, !tenant.isEmpty {
            key = "tenant:\(tenant.utf8.count):" + tenant + ":user:" + sub
        } else {
            key = "user:" + sub
        }
        if key.utf8.count <= RateLimitLimits.maxKeyBytes { return key }
        var md = [UInt8](repeating: 0, count: 32)
        var n: UInt32 = 0
        let bytes = Array(key.utf8)
        let ok = bytes.withUnsafeBytes { s in
            md.withUnsafeMutableBytes { m in
                EVP_Digest(s.baseAddress, s.count, m.baseAddress?.assumingMemoryBound(to: UInt8.self), &n, EVP_sha256(), nil)
            }
        }
        guard ok == 1 else { throw .internalError("sha-256 of a long rate-limit key failed") }
        return "sha256:" + Hex.encode(md)
    }

}
