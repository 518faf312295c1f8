// The fuzz targets: one function per target, returning the closure that handles one input
// (what is set up once is captured). Input layouts are documented in docs/fuzzing.md.
import Bitsec
internal import COpenSSL
import Glibc

// MARK: - config

/// Words whose presence could make a configuration touch the world outside the process:
/// `redis` (connections), `file`/`path`/`socket` (secret and policy files, the file sink,
/// a Unix socket), `syslog` and `stdout` (sinks that write outside the run's directory).
/// Such inputs are skipped before the call. A JSON escape could spell a name without these
/// bytes (`\u0072edis`), so escapes of ASCII letters (`\u004x` .. `\u007x`) are skipped too.
private let forbiddenWords = ["redis", "file", "path", "socket", "syslog", "stdout"].map { Array($0.utf8) }

func configIsSandboxed(_ d: UnsafeRawBufferPointer) -> Bool {
    let n = d.count
    var i = 0
    while i < n {
        let c = d[i] | 0x20  // ASCII lower case (harmless on other bytes: only compared to letters)
        for w in forbiddenWords where c == w[0] && i + w.count <= n {
            var k = 1
            while k < w.count && (d[i + k] | 0x20) == w[k] { k += 1 }
            if k == w.count { return false }
        }
        if d[i] == UInt8(ascii: "\\") && i + 3 < n && d[i + 1] == UInt8(ascii: "u") && d[i + 2] == UInt8(ascii: "0")
            && d[i + 3] == UInt8(ascii: "0") && i + 4 < n && (UInt8(ascii: "4")...UInt8(ascii: "7")).contains(d[i + 4]) {
            return false
        }
        i += 1
    }
    return true
}

/// `bitsec_runtime_open` with the input as the configuration document, then
/// `bitsec_runtime_describe` and `bitsec_runtime_close` when it opened.
func configTarget() -> (UnsafeRawBufferPointer) -> Void {
    // Relative paths (none can pass the filter, but be safe) resolve inside the run's directory.
    _ = chdir(makeTempDir())
    return { data in
        guard configIsSandboxed(data) else { return }
        let a = Arg(data)
        var rt: OpaquePointer? = nil
        let rc = bitsec_runtime_open(a.p, a.len, &rt)
        if rc == 0 {
            var len: UInt = 0
            _ = bitsec_runtime_describe(rt, outBuf, UInt(outCap), &len)
        }
        bitsec_runtime_close(rt)
    }
}

// MARK: - jwks

/// `bitsec_token_keys_reload` with the input as the JWK Set; after a set that loaded, every
/// token of fuzz/runtime/jwks_tokens.txt is verified against it (the fuzzed keys' material
/// then reaches OpenSSL's verification).
func jwksTarget() -> (UnsafeRawBufferPointer) -> Void {
    let rt = openRuntime("jwks")
    let tokens = readLines("\(repoRoot)/fuzz/runtime/jwks_tokens.txt").map { Arg($0) }
    return { data in
        let a = Arg(data)
        guard bitsec_token_keys_reload(rt, a.p, a.len) == 0 else { return }
        for t in tokens {
            var reason: Int32 = 0, len: UInt = 0
            _ = bitsec_verify_token(rt, t.p, t.len, fixedNow, &reason, outBuf, UInt(outCap), &len)
        }
    }
}

func readLines(_ path: String) -> [String] {
    guard let f = fopen(path, "r") else { die("cannot read \(path)") }
    defer { fclose(f) }
    var lines: [String] = []
    var line: UnsafeMutablePointer<CChar>? = nil
    var cap = 0
    while getline(&line, &cap, f) > 0 {
        if let line {
            let s = String(cString: line).split(separator: "\n").first.map(String.init) ?? ""
            if !s.isEmpty && !s.hasPrefix("#") { lines.append(s) }
        }
    }
    free(line)
    return lines
}

// MARK: - verify_token

/// `bitsec_verify_token` with the input as the token, on a runtime with HS256, RS256, ES256
/// and EdDSA keys (fuzz/runtime/tokens.json), at a fixed instant.
func verifyTokenTarget() -> (UnsafeRawBufferPointer) -> Void {
    let rt = tokensRuntime()
    return { data in
        let a = Arg(data)
        verify(rt, a)
    }
}

private func tokensRuntime() -> OpaquePointer {
    let rt = openRuntime("tokens")
    // A revoked jti, so that the revocation check has something to find.
    let jti = Arg("revoked-jti")
    var newly: Int32 = 0
    let rc = bitsec_token_revoke(rt, jti.p, jti.len, 4_102_444_800, fixedNow, &newly)
    jti.release()
    guard rc == 0 else { die("token_revoke: \(lastError())") }
    return rt
}

private func verify(_ rt: OpaquePointer, _ token: Arg) {
    var reason: Int32 = 0, len: UInt = 0
    _ = bitsec_verify_token(rt, token.p, token.len, fixedNow, &reason, outBuf, UInt(outCap), &len)
}

/// Structure-aware: the input is `header RS payload [RS signature]` (RS = 0x1E), raw JSON
/// and raw signature bytes, which the harness base64url-encodes into a compact JWS:
/// - one part: the payload alone, signed by `bitsec_token_sign` with the key chosen by the
///   payload's length (hs, es, ed, rs), then verified: authentic tokens with fuzzed claims;
/// - two parts: header and payload, signed with HS256 under the `hs` key's secret (HMAC
///   computed here), so a fuzzed header (alg, kid, crit, typ, ...) reaches the claim checks;
/// - three parts: header, payload and the third part as the signature bytes.
func verifyTokenJOSETarget() -> (UnsafeRawBufferPointer) -> Void {
    let rt = tokensRuntime()
    let kids = ["hs", "es", "ed", "rs"].map { Arg($0) }
    let hsSecret = hexBytes("6d8ace4ece462b2031698034316a0bc6f33fcdac9b522c35b307cc6908b200a3")
    return { data in
        let p = parts(data, max: 3)
        switch p.count {
        case 1:
            let kid = kids[p[0].count % kids.count]
            var len: UInt = 0
            guard bitsec_token_sign(rt, p[0].p, p[0].len, kid.p, kid.len, outBuf, UInt(outCap), &len) == 0 else { return }
            let token = Arg(UnsafeRawBufferPointer(start: outBuf, count: Int(len)))
            verify(rt, token)
        case 2:
            let signingInput = base64url(p[0].bytes) + [UInt8(ascii: ".")] + base64url(p[1].bytes)
            let mac = hmacSHA256(key: hsSecret, signingInput)
            verify(rt, Arg(signingInput + [UInt8(ascii: ".")] + base64url(mac)))
        default:
            verify(rt, Arg(base64url(p[0].bytes) + [UInt8(ascii: ".")] + base64url(p[1].bytes) + [UInt8(ascii: ".")]
                           + base64url(p[2].bytes)))
        }
    }
}

private let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8)

/// RFC 4648 base64url without padding.
func base64url<C: Collection>(_ bytes: C) -> [UInt8] where C.Element == UInt8 {
    let b = Array(bytes)
    var out: [UInt8] = []
    out.reserveCapacity((b.count * 4 + 2) / 3)
    var i = 0
    while i + 3 <= b.count {
        let v = UInt32(b[i]) << 16 | UInt32(b[i + 1]) << 8 | UInt32(b[i + 2])
        out += [alphabet[Int(v >> 18)], alphabet[Int(v >> 12 & 63)], alphabet[Int(v >> 6 & 63)], alphabet[Int(v & 63)]]
        i += 3
    }
    if b.count - i == 1 {
        let v = UInt32(b[i]) << 16
        out += [alphabet[Int(v >> 18)], alphabet[Int(v >> 12 & 63)]]
    } else if b.count - i == 2 {
        let v = UInt32(b[i]) << 16 | UInt32(b[i + 1]) << 8
        out += [alphabet[Int(v >> 18)], alphabet[Int(v >> 12 & 63)], alphabet[Int(v >> 6 & 63)]]
    }
    return out
}

func hexBytes(_ s: String) -> [UInt8] {
    let h = Array(s.utf8)
    func v(_ c: UInt8) -> UInt8 { c <= 57 ? c - 48 : (c | 0x20) - 87 }
    return stride(from: 0, to: h.count - 1, by: 2).map { v(h[$0]) << 4 | v(h[$0 + 1]) }
}

/// HMAC-SHA-256 through OpenSSL's one-shot EVP_Q_mac.
func hmacSHA256(key: [UInt8], _ data: [UInt8]) -> [UInt8] {
    var mac = [UInt8](repeating: 0, count: 32)
    var macLen = 0
    let ok = key.withUnsafeBytes { k in
        data.withUnsafeBytes { d in
            mac.withUnsafeMutableBytes { m in
                EVP_Q_mac(nil, "HMAC", nil, "SHA256", nil, k.baseAddress, k.count,
                          d.baseAddress?.assumingMemoryBound(to: UInt8.self), d.count,
                          m.baseAddress?.assumingMemoryBound(to: UInt8.self), 32, &macLen) != nil
            }
        }
    }
    guard ok, macLen == 32 else { die("EVP_Q_mac failed") }
    return mac
}

// MARK: - policy

/// Principals decided against every policy that loads (names of the example policies).
private let probePrincipals = ["u1\0admin\0acme\0sales", "u2\0operator viewer\0acme\0quality",
                               "u3\0super_admin\0\0\0inspections:read reports:write", "u4\0quality_engineer manager\0t1\0"]
private let probePermissions = ["equipment:read", "maintenance_records:update", "reports:delete", "inspections:create",
                                "defects:update", "audit_logs:read", "system:execute"]

/// `bitsec_permission_policy_load` with the input as the policy (shadow load when the input
/// ends in an odd byte); when it loads, a fixed set of checks is decided against it (and its
/// rule texts read back) so the compiled matrix is exercised.
func policyTarget() -> (UnsafeRawBufferPointer) -> Void {
    let rt = openRuntime("permissions")
    let principals = probePrincipals.map { Arg($0) }
    let permissions = probePermissions.map { Arg($0) }
    let context = Arg("u2\0acme\0sales")
    return { data in
        let a = Arg(data)
        let shadow = (data.last ?? 0) & 1 == 1
        let rc = shadow ? bitsec_permission_shadow_load(rt, a.p, a.len) : bitsec_permission_policy_load(rt, a.p, a.len)
        guard rc == 0 else { return }
        for p in principals {
            for perm in permissions {
                var d: UInt64 = 0
                guard bitsec_check_permission(rt, p.p, p.len, perm.p, perm.len, context.p, context.len, &d) == 0 else { continue }
                var len: UInt = 0
                _ = bitsec_permission_rule(rt, d, outBuf, UInt(outCap), &len)
            }
        }
    }
}

// MARK: - check_permission

/// On the fixed ERP policy (with ADR-007's as shadow): the input is
/// `principal RS permission RS context`. The principal part is passed to
/// `bitsec_check_permission` as a packed principal, and to `bitsec_check_permission_claims`
/// when it starts with `{`; the permission part also as a batch list to
/// `bitsec_check_permissions`; and `permission NUL principal` to
/// `bitsec_check_permission_packed`. An absent context part is NULL/0.
func checkPermissionTarget() -> (UnsafeRawBufferPointer) -> Void {
    let rt = openRuntime("permissions")
    let decisions = UnsafeMutablePointer<UInt64>.allocate(capacity: 4096)
    return { data in
        let p = parts(data, max: 3)
        let principal = p[0]
        guard p.count >= 2 else {
            // A principal alone: decide one permission per role of the policy's vocabulary.
            var d: UInt64 = 0
            let perm = Arg("equipment:read")
            _ = bitsec_check_permission(rt, principal.p, principal.len, perm.p, perm.len, nil, 0, &d)
            _ = bitsec_check_permission_claims(rt, principal.p, principal.len, perm.p, perm.len, nil, 0, &d)
            return
        }
        let perm = p[1]
        let ctx: Arg? = p.count > 2 ? p[2] : nil
        var d: UInt64 = 0
        if principal.count > 0 && principal.base[0] == CChar(UInt8(ascii: "{")) {
            _ = bitsec_check_permission_claims(rt, principal.p, principal.len, perm.p, perm.len, ctx?.p, ctx?.len ?? 0, &d)
        } else {
            _ = bitsec_check_permission(rt, principal.p, principal.len, perm.p, perm.len, ctx?.p, ctx?.len ?? 0, &d)
            var n: UInt = 0
            _ = bitsec_check_permissions(rt, principal.p, principal.len, perm.p, perm.len, ctx?.p, ctx?.len ?? 0,
                                         decisions, 4096, &n)
            let packed = Arg(Array(perm.bytes) + [0] + Array(principal.bytes))
            _ = bitsec_check_permission_packed(rt, packed.p, packed.len, &d)
        }
        var len: UInt = 0
        _ = bitsec_permission_rule(rt, d, outBuf, UInt(outCap), &len)
    }
}

// MARK: - totp

/// The input is `secret RS code RS user RS parameters`:
/// - `bitsec_totp_verify(secret, code, user)` and `bitsec_totp_verify_sealed(secret as the
///   sealed secret, code, user)` on a runtime with `totp` and `fields` (fuzz/runtime/totp.json);
/// - `bitsec_totp_check` and `bitsec_hotp_check` (stateless) with algorithm, digits, period,
///   t0, window and counter taken from the bytes of the parameters part.
/// The instant advances 20 s per input, so one user's failures cannot keep every later
/// input in the throttled state (the throttle allows 3 failures per 60 s).
func totpTarget() -> (UnsafeRawBufferPointer) -> Void {
    let rt = openRuntime("totp")
    var step: Int64 = 0
    return { data in
        let p = parts(data, max: 4)
        let secret = p[0]
        let code = p.count > 1 ? p[1] : Arg("")
        let user: Arg? = p.count > 2 ? p[2] : nil
        let params = number(p.count > 3 ? p[3] : nil)
        step += 1
        let at = fixedNow + step * 20
        var reason: Int32 = 0, st: Int64 = 0, retry: Int64 = 0
        _ = bitsec_totp_verify(rt, secret.p, secret.len, code.p, code.len, user?.p, user?.len ?? 0, at, &reason, &st, &retry)
        _ = bitsec_totp_verify_sealed(rt, secret.p, secret.len, code.p, code.len, user?.p, user?.len ?? 0, at,
                                      &reason, &st, &retry)
        let alg = Int32(truncatingIfNeeded: params & 3)
        let digits = Int32(truncatingIfNeeded: (params >> 2) & 15)
        let period = (params >> 8) & 0xFFFF
        let t0 = (params >> 24) & 0xFF
        let window = Int32(truncatingIfNeeded: (params >> 32) & 15)
        let counter = UInt64(bitPattern: params >> 36)
        _ = bitsec_totp_check(secret.p, secret.len, code.p, code.len, alg, digits, period, t0, window, at, &reason, &st)
        var next: UInt64 = 0
        _ = bitsec_hotp_check(secret.p, secret.len, code.p, code.len, alg, digits, counter, window, &reason, &next)
    }
}

// MARK: - decrypt_field

/// The input is `token RS context`: `bitsec_decrypt_field` (either form, detected from the
/// first byte) with the context (none when absent), then `bitsec_fernet_decrypt` of the
/// token part as a Fernet token, without and with a TTL, at a fixed instant.
func decryptFieldTarget() -> (UnsafeRawBufferPointer) -> Void {
    let rt = openRuntime("fields")
    return { data in
        let p = parts(data, max: 2)
        let token = p[0]
        let ctx: Arg? = p.count > 1 ? p[1] : nil
        var len: UInt = 0, reason: Int32 = 0
        _ = bitsec_decrypt_field(rt, token.u8, token.len, ctx?.p, ctx?.len ?? 0, outBytes, UInt(outCap), &len, &reason)
        _ = bitsec_fernet_decrypt(rt, token.p, token.len, 0, 499_162_801, outBytes, UInt(outCap), &len, &reason)
        _ = bitsec_fernet_decrypt(rt, token.p, token.len, 60, 499_162_801, outBytes, UInt(outCap), &len, &reason)
    }
}

// MARK: - audit_emit

/// `bitsec_audit_emit` with the input as the event, on a runtime whose file sink writes in
/// the run's temporary directory (batched durability, drop policy, a 4096-event queue,
/// rotation at 4 MiB); rotated files are deleted every 4096 inputs so the disk use stays
/// bounded (at most a few files of 4 MiB).
func auditEmitTarget() -> (UnsafeRawBufferPointer) -> Void {
    let rt = openRuntime("audit")
    let dir = makeTempDir()
    var count = 0
    return { data in
        let a = Arg(data)
        var seq: UInt64 = 0
        _ = bitsec_audit_emit(rt, a.p, a.len, &seq)
        count += 1
        if count % 4096 == 0 {
            removeFiles(in: dir) { $0.hasPrefix("audit.log.") }
        }
    }
}

// MARK: - csrf

/// The input is `binding RS token [RS submitted [RS method RS origin RS fetch_site]]`:
/// `bitsec_csrf_token_verify` (binding as the session identifier, token as presented),
/// `bitsec_csrf_cookie_verify` (token as the cookie, submitted as the header; the token itself
/// when absent) and `bitsec_csrf_origin_check`, at a fixed instant (fuzz/runtime/csrf.json).
func csrfTarget() -> (UnsafeRawBufferPointer) -> Void {
    let rt = openRuntime("csrf")
    return { data in
        let p = parts(data, max: 6)
        let binding = p[0]
        let token = p.count > 1 ? p[1] : Arg("")
        let submitted = p.count > 2 ? p[2] : token
        var reason: Int32 = 0
        _ = bitsec_csrf_token_verify(rt, binding.p, binding.len, token.p, token.len, fixedNow, &reason)
        _ = bitsec_csrf_cookie_verify(rt, binding.p, binding.len, token.p, token.len, submitted.p, submitted.len, fixedNow, &reason)
        if p.count > 3 {
            let origin = p.count > 4 ? p[4] : Arg("")
            let site = p.count > 5 ? p[5] : Arg("")
            _ = bitsec_csrf_origin_check(rt, p[3].p, p[3].len, origin.p, origin.len, site.p, site.len, &reason)
        }
    }
}

// MARK: - password_phc

/// The input is `stored RS password`: `bitsec_password_needs_rehash(stored)`, then
/// `bitsec_password_verify(password, stored)` (the PHC parser, the parameter bounds, scrypt
/// for strings that parse) and `bitsec_password_check(password)` with and without the MFA
/// flag. The runtime (fuzz/runtime/passwords.json) allows 1 MiB of scrypt memory, so a
/// fuzzed string that parses costs at most N·r ≤ 8192 with p ≤ 64: well within the timeout.
func passwordPHCTarget() -> (UnsafeRawBufferPointer) -> Void {
    let rt = openRuntime("passwords")
    return { data in
        let p = parts(data, max: 2)
        let stored = p[0]
        let password = p.count > 1 ? p[1] : Arg("")
        var needs: Int32 = 0, reason: Int32 = 0
        _ = bitsec_password_needs_rehash(rt, stored.p, stored.len, &needs)
        _ = bitsec_password_verify(rt, password.p, password.len, stored.p, stored.len, &reason, &needs)
        var reasons: UInt32 = 0
        var length: UInt = 0
        _ = bitsec_password_check(rt, password.p, password.len, 0, &reasons, &length)
        _ = bitsec_password_check(rt, password.p, password.len, 1, &reasons, &length)
    }
}

// MARK: - session

/// The input is `token RS client RS user_agent`: `bitsec_session_validate` of the token as
/// presented (the token parser: length, alphabet, the user tag, the hash lookup) with that
/// client address and user agent, then `bitsec_session_revoke` of the same bytes as a session
/// identifier or token. The runtime (fuzz/runtime/sessions.json) holds a few sessions the
/// seed corpus names, bound to their client's network, in the process store.
func sessionTarget() -> (UnsafeRawBufferPointer) -> Void {
    let rt = openRuntime("sessions")
    return { data in
        let p = parts(data, max: 3)
        let token = p[0]
        let client = p.count > 1 ? p[1] : Arg("")
        let agent = p.count > 2 ? p[2] : Arg("")
        var reason: Int32 = 0
        var out = [CChar](repeating: 0, count: 2048)
        var len: UInt = 0
        _ = out.withUnsafeMutableBufferPointer { b in
            bitsec_session_validate(rt, token.p, token.len, client.p, client.len, agent.p, agent.len, fixedNow, &reason,
                                    b.baseAddress, UInt(b.count), &len)
        }
        var ended: Int32 = 0
        _ = bitsec_session_revoke(rt, token.p, token.len, fixedNow, &ended)
    }
}
