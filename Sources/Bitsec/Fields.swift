// Field encryption (issue 7): bitsec_encrypt_field / bitsec_decrypt_field, rewrap, keyring
// reload, and Fernet compatibility. Decode, call FieldService, encode; nothing is decided here.
internal import BitsecCore
internal import Glibc

/// Encrypts a field value under the primary key of the runtime's `fields` keyring, bound to
/// a context (AES-256-GCM, random 96-bit nonce; or AES-256-SIV with
/// BITSEC_FIELD_DETERMINISTIC). The token is self-describing: format version, key id,
/// context check, nonce, ciphertext, tag (layout in docs/fields.md and bitsec.h).
///
/// rt: the runtime (its configuration must have a fields section with keys).
/// plaintext, plaintext_len: the value, any bytes, at most fields.max_plaintext_bytes (at
/// most BITSEC_FIELD_MAX_PLAINTEXT); NULL only when plaintext_len is 0. Caller-owned.
/// context, context_len: the associated data the token is bound to, at most
/// BITSEC_FIELD_MAX_CONTEXT bytes (may be empty, but should not be): build it from what
/// identifies the slot, e.g. "equipment_records.serial_number|<row id>|<tenant id>". A token
/// decrypts only with the same context. Escape or length-prefix components that may contain
/// the separator. Caller-owned.
/// flags: 0 for the text form, or BITSEC_FIELD_BINARY; add BITSEC_FIELD_DETERMINISTIC for
/// AES-SIV (only for contexts listed in fields.deterministic_contexts: equal plaintexts then
/// give equal tokens, which is what allows lookups by equality and what leaks).
/// out_buf, out_cap: caller-owned output; bitsec_field_bound(plaintext_len, flags) bytes are
/// always enough. The text form is followed by a NUL when there is room.
/// out_len: receives the token's length, also when the buffer is too small.
/// Returns BITSEC_OK; BITSEC_E_BUFFER_TOO_SMALL (*out_len holds the size needed);
/// BITSEC_E_INVALID_ARGUMENT (NULL, unknown flags, deterministic mode not enabled for the
/// context); BITSEC_E_TOO_LARGE; BITSEC_E_NOT_CONFIGURED (no fields section or no keys);
/// BITSEC_E_CRYPTO; BITSEC_E_CLOSED.
/// Thread safety: safe from any thread; concurrent with bitsec_field_keys_reload.
/// Since: 0.1.0
@c(bitsec_encrypt_field)
public func bitsec_encrypt_field(_ rt: OpaquePointer?, _ plaintext: UnsafePointer<UInt8>?, _ plaintext_len: UInt,
                                 _ context: UnsafePointer<CChar>?, _ context_len: UInt, _ flags: UInt32,
                                 _ out_buf: UnsafeMutablePointer<CChar>?, _ out_cap: UInt, _ out_len: UnsafeMutablePointer<UInt>?) -> Int32 {
    withRuntime(rt, timed: .fieldEncrypt) { (r) throws(BitsecError) in
        let fields = try r.require(r.fields)
        let out_len = try requiredOut(out_len, "out_len")
        let pt = try bytesArg(UnsafeRawPointer(plaintext), plaintext_len, "plaintext", lengthName: "plaintext_len", max: FieldFormat.maxPlaintextBytes)
        let ctx = try contextArg(context, context_len)
        let out = outBuffer(UnsafeMutableRawPointer(out_buf), out_cap)
        let n = try fields.encrypt(pt, context: ctx, flags: FieldFlags(rawValue: flags), into: out)
        try finishOutput(n, UnsafeMutableRawPointer(out_buf), out_cap, out_len)
    }
}

/// Decrypts a field token (text or binary form, detected from its first byte) bound to
/// `context`. A token that does not decrypt is a decision, not an error: the call returns
/// BITSEC_OK, out_reason receives the reason (a BITSEC_FIELD_REASON_ code), and nothing is
/// written to out_buf.
///
/// rt: the runtime (fields section with keys).
/// token, token_len: the token, at most BITSEC_FIELD_MAX_TOKEN bytes. Caller-owned.
/// context, context_len: the context given at encryption (at most BITSEC_FIELD_MAX_CONTEXT).
/// out_buf, out_cap: caller-owned output for the plaintext; token_len bytes are always
/// enough. A NUL follows the plaintext when there is room (the plaintext may itself contain
/// NULs: use *out_len).
/// out_len: receives the plaintext's length (also when the buffer is too small).
/// out_reason: receives BITSEC_FIELD_REASON_OK or why decryption failed: MALFORMED,
/// TAMPERED, WRONG_CONTEXT, UNKNOWN_KEY, RETIRED_KEY. Set to MALFORMED on entry; read it
/// only when the call returns BITSEC_OK.
/// Returns BITSEC_OK (decision in *out_reason); BITSEC_E_BUFFER_TOO_SMALL (*out_len holds
/// the size needed; checked before authentication); BITSEC_E_INVALID_ARGUMENT;
/// BITSEC_E_TOO_LARGE; BITSEC_E_NOT_CONFIGURED; BITSEC_E_CRYPTO; BITSEC_E_CLOSED.
/// A failed decision is reported to the audit hook (data_access/decrypt_failed) when audit
/// is configured: reason, key id, format, and the context's part before the first "|" only
/// when it looks like a schema name; never the plaintext or the rest of the context.
/// Thread safety: safe from any thread; concurrent with bitsec_field_keys_reload.
/// Since: 0.1.0
@c(bitsec_decrypt_field)
public func bitsec_decrypt_field(_ rt: OpaquePointer?, _ token: UnsafePointer<UInt8>?, _ token_len: UInt,
                                 _ context: UnsafePointer<CChar>?, _ context_len: UInt,
                                 _ out_buf: UnsafeMutablePointer<UInt8>?, _ out_cap: UInt, _ out_len: UnsafeMutablePointer<UInt>?,
                                 _ out_reason: UnsafeMutablePointer<Int32>?) -> Int32 {
    out_reason?.pointee = FieldReason.malformed.rawValue
    return withRuntime(rt, timed: .fieldDecrypt) { (r) throws(BitsecError) in
        let fields = try r.require(r.fields)
        let (out_len, out_reason) = try (requiredOut(out_len, "out_len"), requiredOut(out_reason, "out_reason"))
        let tok = try fieldTokenArg(token, token_len)
        let ctx = try contextArg(context, context_len)
        let o = try fields.decrypt(tok, context: ctx, into: outBuffer(UnsafeMutableRawPointer(out_buf), out_cap))
        out_reason.pointee = o.reason.rawValue
        out_len.pointee = 0
        guard o.reason == .ok else { return }
        try finishOutput(o.length, UnsafeMutableRawPointer(out_buf), out_cap, out_len)
    }
}

/// Re-encrypts a token under the current primary key (background migration after a
/// rotation), with the same context and the same mode (randomised or deterministic). A token
/// already under the primary key and in the requested form is verified and copied unchanged.
///
/// rt: the runtime. token, token_len: the token (either form). context, context_len: its
/// context (at most BITSEC_FIELD_MAX_CONTEXT).
/// flags: 0 (text output) or BITSEC_FIELD_BINARY; the mode follows the token.
/// out_buf, out_cap: caller-owned output; bitsec_field_bound(token_len, flags) bytes are
/// always enough. out_len: the new token's length.
/// out_reason: as bitsec_decrypt_field (the old token's decision).
/// out_rewrapped: optional; receives 1 if a new token was produced, 0 if it was copied.
/// Returns as bitsec_encrypt_field and bitsec_decrypt_field.
/// Thread safety: safe from any thread.
/// Since: 0.1.0 (named bitsec_rewrap_field before 0.2.0)
@c(bitsec_field_rewrap)
public func bitsec_field_rewrap(_ rt: OpaquePointer?, _ token: UnsafePointer<UInt8>?, _ token_len: UInt,
                                _ context: UnsafePointer<CChar>?, _ context_len: UInt, _ flags: UInt32,
                                _ out_buf: UnsafeMutablePointer<CChar>?, _ out_cap: UInt, _ out_len: UnsafeMutablePointer<UInt>?,
                                _ out_reason: UnsafeMutablePointer<Int32>?, _ out_rewrapped: UnsafeMutablePointer<Int32>?) -> Int32 {
    out_reason?.pointee = FieldReason.malformed.rawValue
    out_rewrapped?.pointee = 0
    return withRuntime(rt) { (r) throws(BitsecError) in
        let fields = try r.require(r.fields)
        let (out_len, out_reason) = try (requiredOut(out_len, "out_len"), requiredOut(out_reason, "out_reason"))
        let tok = try fieldTokenArg(token, token_len)
        let ctx = try contextArg(context, context_len)
        let (o, rewrapped) = try fields.rewrap(tok, context: ctx, flags: FieldFlags(rawValue: flags), into: outBuffer(UnsafeMutableRawPointer(out_buf), out_cap))
        out_reason.pointee = o.reason.rawValue
        out_len.pointee = 0
        guard o.reason == .ok else { return }
        try finishOutput(o.length, UnsafeMutableRawPointer(out_buf), out_cap, out_len)
        store(out_rewrapped, rewrapped ? 1 : 0)
    }
}

/// The largest token bitsec_encrypt_field can produce for a plaintext of plaintext_len bytes
/// with these flags (any key id), like zstd's ZSTD_compressBound. Returns 0 when
/// plaintext_len exceeds BITSEC_FIELD_MAX_PLAINTEXT or flags has unknown bits.
/// Thread safety: safe from any thread (pure function).
/// Since: 0.1.0
@c(bitsec_field_bound)
public func bitsec_field_bound(_ plaintext_len: UInt, _ flags: UInt32) -> UInt {
    let f = FieldFlags(rawValue: flags)
    guard f.isSubset(of: .all), plaintext_len <= UInt(FieldFormat.maxPlaintextBytes) else { return 0 }
    return UInt(FieldFormat.bound(plaintext: Int(plaintext_len), flags: f))
}

/// The name of a BITSEC_FIELD_REASON_* code ("ok", "malformed", "tampered", "wrong_context",
/// "unknown_key", "retired_key", "expired", "not_yet_valid"; "unknown" otherwise).
/// Returns a static NUL-terminated string; never free it.
/// Thread safety: safe from any thread.
/// Since: 0.1.0
@c(bitsec_field_reason_name)
public func bitsec_field_reason_name(_ reason: Int32) -> UnsafePointer<CChar> {
    let s: StaticString = FieldReason(rawValue: reason)?.name ?? "unknown"
    return UnsafeRawPointer(s.utf8Start).assumingMemoryBound(to: CChar.self)
}

/// Replaces the runtime's field keyring atomically (rotation: add a key and make it
/// primary; retire a key once its data has been rewrapped). The new section is validated
/// like at open and its secrets are read again from their files and variables; on any
/// error the current keyring stays in use. Calls in flight finish with the keyring they
/// started with. Emits key_management/keys_reloaded to the audit hook (success or failure).
/// With a host store region (store.host), every process of the host that uses the region
/// applies the same section at its next call.
///
/// rt: the runtime (it must have been opened with a fields section).
/// section, section_len: the JSON text of the new `fields` section (the object itself, not
/// a whole configuration document), at most BITSEC_MAX_CONFIG_BYTES. Caller-owned.
/// Returns BITSEC_OK; BITSEC_E_CONFIG (the detail names the field); BITSEC_E_TOO_LARGE;
/// BITSEC_E_NOT_CONFIGURED; BITSEC_E_INVALID_ARGUMENT; BITSEC_E_CLOSED.
/// Thread safety: safe from any thread, concurrently with every field operation.
/// Since: 0.1.0 (named bitsec_fields_reload before 0.2.0)
@c(bitsec_field_keys_reload)
public func bitsec_field_keys_reload(_ rt: OpaquePointer?, _ section: UnsafePointer<CChar>?, _ section_len: UInt) -> Int32 {
    withRuntime(rt) { (r) throws(BitsecError) in
        _ = try r.require(r.fields)
        let n = try sizeArg(section_len, "section_len", max: Limits.maxConfigBytes)
        try r.reloadFieldKeys(try bytesArg(UnsafeRawPointer(section), n, "section", max: Limits.maxConfigBytes))
    }
}

/// Produces a Fernet token (https://github.com/fernet/spec; readable by Python's
/// cryptography.fernet.Fernet) under the first key of fields.fernet.keys.
///
/// rt: the runtime (fields.fernet configured).
/// plaintext, plaintext_len: at most BITSEC_FIELD_MAX_PLAINTEXT bytes. Caller-owned.
/// now: the token's timestamp in Unix seconds; 0 = now.
/// out_buf, out_cap: caller-owned; bitsec_fernet_bound(plaintext_len) bytes are enough. The
/// token (padded url-safe base64, as cryptography writes it) is followed by a NUL when there
/// is room. out_len: receives its length.
/// Returns BITSEC_OK; BITSEC_E_BUFFER_TOO_SMALL; BITSEC_E_NOT_CONFIGURED (no fields.fernet);
/// BITSEC_E_INVALID_ARGUMENT; BITSEC_E_TOO_LARGE; BITSEC_E_CRYPTO; BITSEC_E_CLOSED.
/// Thread safety: safe from any thread.
/// Since: 0.1.0
@c(bitsec_fernet_encrypt)
public func bitsec_fernet_encrypt(_ rt: OpaquePointer?, _ plaintext: UnsafePointer<UInt8>?, _ plaintext_len: UInt, _ now: Int64,
                                  _ out_buf: UnsafeMutablePointer<CChar>?, _ out_cap: UInt, _ out_len: UnsafeMutablePointer<UInt>?) -> Int32 {
    withRuntime(rt) { (r) throws(BitsecError) in
        let fields = try r.require(r.fields)
        let pt = try bytesArg(UnsafeRawPointer(plaintext), plaintext_len, "plaintext", lengthName: "plaintext_len", max: FieldFormat.maxPlaintextBytes)
        try writeOutput(try fields.fernetEncrypt(pt, now: now), out_buf, out_cap, out_len)
    }
}

/// Decrypts a Fernet token with the keys of fields.fernet.keys, tried in order (as
/// MultiFernet). A token that does not decrypt is a decision (BITSEC_OK, *out_reason):
/// MALFORMED (bad base64, too short, bad version, bad padding), TAMPERED (no key's HMAC
/// matches; compared with CRYPTO_memcmp), EXPIRED (older than ttl_seconds), NOT_YET_VALID
/// (with a TTL, a timestamp more than 60 s after `now`).
///
/// rt: the runtime. token, token_len: the token, at most bitsec_fernet_bound(
/// BITSEC_FIELD_MAX_PLAINTEXT) bytes. Caller-owned.
/// ttl_seconds: maximum age; 0 = no limit (and no future check), as cryptography's ttl=None.
/// cryptography's ttl=0 cannot be given here: use bitsec_fernet_decrypt_ttl.
/// now: the instant to evaluate at, Unix seconds; 0 = now.
/// out_buf, out_cap: caller-owned; token_len bytes are always enough. out_len: the
/// plaintext's length (also when the buffer is too small). out_reason: the decision.
/// Returns BITSEC_OK; BITSEC_E_BUFFER_TOO_SMALL; BITSEC_E_NOT_CONFIGURED;
/// BITSEC_E_INVALID_ARGUMENT (NULL, negative ttl); BITSEC_E_TOO_LARGE; BITSEC_E_CLOSED.
/// Thread safety: safe from any thread.
/// Since: 0.1.0
@c(bitsec_fernet_decrypt)
public func bitsec_fernet_decrypt(_ rt: OpaquePointer?, _ token: UnsafePointer<CChar>?, _ token_len: UInt, _ ttl_seconds: Int64, _ now: Int64,
                                  _ out_buf: UnsafeMutablePointer<UInt8>?, _ out_cap: UInt, _ out_len: UnsafeMutablePointer<UInt>?,
                                  _ out_reason: UnsafeMutablePointer<Int32>?) -> Int32 {
    fernetDecrypt(rt, token, token_len, .zeroMeansNone(ttl_seconds), now, out_buf, out_cap, out_len, out_reason)
}

/// As bitsec_fernet_decrypt, with a TTL whose every non-negative value is a limit, applied
/// exactly as cryptography's Fernet.decrypt(token, ttl): EXPIRED when timestamp + ttl < now,
/// NOT_YET_VALID when now + 60 < timestamp. ttl 0 thus accepts only tokens stamped in the
/// current second (or up to 60 s ahead), as cryptography's ttl=0 does.
///
/// rt, token, token_len, now, out_buf, out_cap, out_len, out_reason: as bitsec_fernet_decrypt.
/// ttl: BITSEC_FERNET_NO_TTL (-1) for no limit and no future check (cryptography's
/// ttl=None); 0 or more: the maximum age in seconds.
/// Returns as bitsec_fernet_decrypt; BITSEC_E_INVALID_ARGUMENT for a ttl below -1.
/// Thread safety: safe from any thread.
/// Since: 0.2.0
@c(bitsec_fernet_decrypt_ttl)
public func bitsec_fernet_decrypt_ttl(_ rt: OpaquePointer?, _ token: UnsafePointer<CChar>?, _ token_len: UInt, _ ttl: Int64, _ now: Int64,
                                      _ out_buf: UnsafeMutablePointer<UInt8>?, _ out_cap: UInt, _ out_len: UnsafeMutablePointer<UInt>?,
                                      _ out_reason: UnsafeMutablePointer<Int32>?) -> Int32 {
    fernetDecrypt(rt, token, token_len, .exact(ttl), now, out_buf, out_cap, out_len, out_reason)
}

/// The body of the Fernet calls that decide (decrypt, rotate, migrate): out_reason is
/// MALFORMED until a decision; out_len and out_reason are required; a TTL of the exact form is
/// checked before the token is read. `decide` gets the service, the token and the TTL limit,
/// and reports its decision through `decided`, which writes *out_reason, sets *out_len to 0
/// and says whether the token was accepted (then `decide` writes the output).
private func fernetDecision(_ rt: OpaquePointer?, _ token: UnsafePointer<CChar>?, _ token_len: UInt, _ ttl: FernetTTL?,
                            _ out_len: UnsafeMutablePointer<UInt>?, _ out_reason: UnsafeMutablePointer<Int32>?,
                            _ decide: (FieldService, UnsafeRawBufferPointer, Int64?, UnsafeMutablePointer<UInt>, (FieldReason) -> Bool) throws(BitsecError) -> Void) -> Int32 {
    out_reason?.pointee = FieldReason.malformed.rawValue
    return withRuntime(rt) { (r) throws(BitsecError) in
        let fields = try r.require(r.fields)
        let (outLen, reason) = try (requiredOut(out_len, "out_len"), requiredOut(out_reason, "out_reason"))
        let limit = try ttl?.checkedLimit()
        let tok = try fernetTokenArg(token, token_len)
        try decide(fields, tok, limit, outLen) { decision in
            reason.pointee = decision.rawValue
            outLen.pointee = 0
            return decision == .ok
        }
    }
}

/// The body of bitsec_fernet_decrypt and bitsec_fernet_decrypt_ttl.
private func fernetDecrypt(_ rt: OpaquePointer?, _ token: UnsafePointer<CChar>?, _ token_len: UInt, _ ttl: FernetTTL, _ now: Int64,
                           _ out_buf: UnsafeMutablePointer<UInt8>?, _ out_cap: UInt, _ out_len: UnsafeMutablePointer<UInt>?,
                           _ out_reason: UnsafeMutablePointer<Int32>?) -> Int32 {
    fernetDecision(rt, token, token_len, ttl, out_len, out_reason) { (fields, tok, limit, outLen, decided) throws(BitsecError) in
        var o: FernetKeyring.Opened
        switch ttl {
        case .zeroMeansNone(let seconds): o = try fields.fernetDecrypt(tok, ttl: seconds, now: now)
        case .exact: o = try fields.fernetDecrypt(tok, timeToLive: limit, now: now)
        }
        defer { wipe(&o.plaintext) }
        guard decided(o.reason) else { return }
        try o.plaintext.withRawBytes { (p) throws(BitsecError) in
            try writeOutput(p, UnsafeMutableRawPointer(out_buf)?.assumingMemoryBound(to: CChar.self), out_cap, outLen)
        }
    }
}

/// MultiFernet.rotate: re-encrypts an authentic Fernet token under the first key of
/// fields.fernet.keys, keeping its timestamp (no TTL applied).
///
/// rt: the runtime. token, token_len: the token. out_buf, out_cap: caller-owned;
/// bitsec_fernet_bound(token_len) bytes are always enough. out_len: the new token's length.
/// out_reason: the old token's decision (MALFORMED or TAMPERED on failure).
/// Returns as bitsec_fernet_decrypt.
/// Thread safety: safe from any thread.
/// Since: 0.1.0
@c(bitsec_fernet_rotate)
public func bitsec_fernet_rotate(_ rt: OpaquePointer?, _ token: UnsafePointer<CChar>?, _ token_len: UInt,
                                 _ out_buf: UnsafeMutablePointer<CChar>?, _ out_cap: UInt, _ out_len: UnsafeMutablePointer<UInt>?,
                                 _ out_reason: UnsafeMutablePointer<Int32>?) -> Int32 {
    fernetDecision(rt, token, token_len, nil, out_len, out_reason) { (fields, tok, _, outLen, decided) throws(BitsecError) in
        let (reason, t) = try fields.fernetRotate(tok)
        guard decided(reason) else { return }
        try writeOutput(t, out_buf, out_cap, outLen)
    }
}

/// Migrates a Fernet token into the bitsec format: decrypts it (as bitsec_fernet_decrypt)
/// and encrypts the plaintext under the primary field key bound to `context` (as
/// bitsec_encrypt_field). The plaintext never leaves the library.
///
/// rt: the runtime (fields.keys and fields.fernet configured).
/// token, token_len: the Fernet token. ttl_seconds, now: as bitsec_fernet_decrypt.
/// context, context_len, flags: as bitsec_encrypt_field.
/// out_buf, out_cap: caller-owned; bitsec_field_bound(token_len, flags) bytes are always
/// enough. out_len: the new token's length. out_reason: the Fernet token's decision.
/// Returns as bitsec_encrypt_field and bitsec_fernet_decrypt.
/// Thread safety: safe from any thread.
/// Since: 0.1.0
@c(bitsec_fernet_migrate)
public func bitsec_fernet_migrate(_ rt: OpaquePointer?, _ token: UnsafePointer<CChar>?, _ token_len: UInt, _ ttl_seconds: Int64, _ now: Int64,
                                  _ context: UnsafePointer<CChar>?, _ context_len: UInt, _ flags: UInt32,
                                  _ out_buf: UnsafeMutablePointer<CChar>?, _ out_cap: UInt, _ out_len: UnsafeMutablePointer<UInt>?,
                                  _ out_reason: UnsafeMutablePointer<Int32>?) -> Int32 {
    fernetMigrate(rt, token, token_len, .zeroMeansNone(ttl_seconds), now, context, context_len, flags, out_buf, out_cap, out_len, out_reason)
}

/// As bitsec_fernet_migrate, with the TTL of bitsec_fernet_decrypt_ttl
/// (BITSEC_FERNET_NO_TTL (-1) for none; 0 and up exactly as cryptography's ttl).
///
/// rt, token, token_len, now, context, context_len, flags, out_buf, out_cap, out_len,
/// out_reason: as bitsec_fernet_migrate. ttl: as bitsec_fernet_decrypt_ttl.
/// Returns as bitsec_fernet_migrate; BITSEC_E_INVALID_ARGUMENT for a ttl below -1.
/// Thread safety: safe from any thread.
/// Since: 0.2.0
@c(bitsec_fernet_migrate_ttl)
public func bitsec_fernet_migrate_ttl(_ rt: OpaquePointer?, _ token: UnsafePointer<CChar>?, _ token_len: UInt, _ ttl: Int64, _ now: Int64,
                                      _ context: UnsafePointer<CChar>?, _ context_len: UInt, _ flags: UInt32,
                                      _ out_buf: UnsafeMutablePointer<CChar>?, _ out_cap: UInt, _ out_len: UnsafeMutablePointer<UInt>?,
                                      _ out_reason: UnsafeMutablePointer<Int32>?) -> Int32 {
    fernetMigrate(rt, token, token_len, .exact(ttl), now, context, context_len, flags, out_buf, out_cap, out_len, out_reason)
}

/// The body of bitsec_fernet_migrate and bitsec_fernet_migrate_ttl.
private func fernetMigrate(_ rt: OpaquePointer?, _ token: UnsafePointer<CChar>?, _ token_len: UInt, _ ttl: FernetTTL, _ now: Int64,
                           _ context: UnsafePointer<CChar>?, _ context_len: UInt, _ flags: UInt32,
                           _ out_buf: UnsafeMutablePointer<CChar>?, _ out_cap: UInt, _ out_len: UnsafeMutablePointer<UInt>?,
                           _ out_reason: UnsafeMutablePointer<Int32>?) -> Int32 {
    fernetDecision(rt, token, token_len, ttl, out_len, out_reason) { (fields, tok, limit, outLen, decided) throws(BitsecError) in
        let ctx = try contextArg(context, context_len)
        let into = outBuffer(UnsafeMutableRawPointer(out_buf), out_cap)
        let o: FieldOutcome
        switch ttl {
        case .zeroMeansNone(let seconds):
            o = try fields.fernetMigrate(tok, ttl: seconds, now: now, context: ctx, flags: FieldFlags(rawValue: flags), into: into)
        case .exact:
            o = try fields.fernetMigrate(tok, timeToLive: limit, now: now, context: ctx, flags: FieldFlags(rawValue: flags), into: into)
        }
        guard decided(o.reason) else { return }
        try finishOutput(o.length, UnsafeMutableRawPointer(out_buf), out_cap, outLen)
    }
}

/// The length of the Fernet token bitsec_fernet_encrypt produces for plaintext_len bytes;
/// 0 when plaintext_len exceeds BITSEC_FIELD_MAX_PLAINTEXT.
/// Thread safety: safe from any thread (pure function).
/// Since: 0.1.0
@c(bitsec_fernet_bound)
public func bitsec_fernet_bound(_ plaintext_len: UInt) -> UInt {
    guard plaintext_len <= UInt(FieldFormat.maxPlaintextBytes) else { return 0 }
    return UInt(FernetKeyring.bound(plaintext: Int(plaintext_len)))
}
