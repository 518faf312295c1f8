// Plumbing shared by every exported function: argument decoding, output buffers, status
// and the per-thread detail message. No decisions are made here.
internal import BitsecCore
internal import Glibc
internal import Synchronization

// MARK: - Per-thread detail message

/// Each thread has a 512-byte buffer holding the detail of its last failed call.
private let detailKey: pthread_key_t = {
    var key = pthread_key_t()
    pthread_key_create(&key) { p in free(p) }
    return key
}()

private let emptyDetail: StaticString = ""

func threadDetailBuffer() -> UnsafeMutablePointer<CChar>? {
    if let p = pthread_getspecific(detailKey) { return p.assumingMemoryBound(to: CChar.self) }
    guard let p = calloc(Limits.maxMessageBytes, 1) else { return nil }
    pthread_setspecific(detailKey, p)
    return p.assumingMemoryBound(to: CChar.self)
}

/// Records `message` as this thread's last detail, truncated on a UTF-8 boundary.
func setLastError(_ message: String) {
    guard let buf = threadDetailBuffer() else { return }
    var bytes = Array(message.utf8.prefix(Limits.maxMessageBytes - 1))
    // Do not cut a multi-byte sequence in half (at most three bytes to drop).
    while !UTF8Validation.isValid(bytes) { bytes.removeLast() }
    bytes.withUnsafeBytes { raw in
        if let base = raw.baseAddress { memcpy(buf, base, raw.count) }
    }
    buf[bytes.count] = 0
}

func lastErrorPointer() -> UnsafePointer<CChar> {
    if let p = pthread_getspecific(detailKey) { return UnsafePointer(p.assumingMemoryBound(to: CChar.self)) }
    return UnsafeRawPointer(emptyDetail.utf8Start).assumingMemoryBound(to: CChar.self)
}

// MARK: - Calls

/// Runs an ABI body, turning a thrown error into its status code and detail message.
@inline(__always)
func abiCall(_ body: () throws(BitsecError) -> Void) -> Int32 {
    do {
        try body()
        return Status.ok.rawValue
    } catch {
        setLastError(error.detail)
        return error.status.rawValue
    }
}

/// Runs an ABI body on a live runtime handle.
@inline(__always)
func withRuntime(_ rt: OpaquePointer?, _ body: (Runtime) throws(BitsecError) -> Void) -> Int32 {
    guard let rt else {
        setLastError("runtime handle is NULL")
        return Status.invalidArgument.rawValue
    }
    // Handles are never freed (see RuntimeHandle), so borrowing without a retain is safe.
    return Unmanaged<RuntimeHandle>.fromOpaque(UnsafeRawPointer(rt))._withUnsafeGuaranteedRef { handle in
        guard handle.magic == RuntimeHandle.liveMagic else {
            setLastError("not a bitsec runtime handle")
            return Status.invalidArgument.rawValue
        }
        guard let runtime = handle.enter() else {
            setLastError("runtime handle is closed")
            return Status.closed.rawValue
        }
        defer { handle.leave() }
        return runtime._withUnsafeGuaranteedRef { r in
            r.countABICall()
            r.followHostReloads()
            return abiCall { () throws(BitsecError) in try body(r) }
        }
    }
}

/// `withRuntime`, timed: the call's latency goes into the runtime's histogram of `op`
/// (`bitsec_operation_duration_seconds`; nothing when `metrics.histograms` is off).
@inline(__always)
func withRuntime(_ rt: OpaquePointer?, timed op: TimedOperation, _ body: (Runtime) throws(BitsecError) -> Void) -> Int32 {
    withRuntime(rt) { (r) throws(BitsecError) in
        let t0 = r.latency.start(op)
        defer { r.latency.finish(op, t0) }
        try body(r)
    }
}

// MARK: - Arguments

/// A caller's (pointer, length) pair as bytes. NULL with length 0 is the empty input.
@inline(__always)
func bytesArg(_ p: UnsafeRawPointer?, _ len: Int, _ name: StaticString, max: Int = Limits.maxArgumentBytes) throws(BitsecError) -> UnsafeRawBufferPointer {
    guard len >= 0 else { throw .invalid("\(name): length is negative") }
    guard len <= max else { throw .tooLarge("\(name): \(len) bytes exceeds the limit of \(max)") }
    guard let p else {
        if len == 0 { return UnsafeRawBufferPointer(start: nil, count: 0) }
        throw .invalid("\(name) is NULL")
    }
    return UnsafeRawBufferPointer(start: p, count: len)
}

/// A caller's (pointer, `size_t` length) pair as bytes: the length is checked against `max`
/// before the pointer is looked at. NULL with length 0 is the empty input. `lengthName`
/// names the length parameter in a too-large message (default: `name`).
@inline(__always)
func bytesArg(_ p: UnsafeRawPointer?, _ len: UInt, _ name: StaticString, lengthName: StaticString? = nil,
              max: Int = Limits.maxArgumentBytes) throws(BitsecError) -> UnsafeRawBufferPointer {
    try bytesArg(p, try sizeArg(len, lengthName ?? name, max: max), name, max: max)
}

@inline(__always)
func sizeArg(_ n: UInt, _ name: StaticString, max: Int = Limits.maxArgumentBytes) throws(BitsecError) -> Int {
    guard n <= UInt(max) else { throw .tooLarge("\(name): \(n) exceeds the limit of \(max)") }
    return Int(n)
}

/// A field token (bitsec_decrypt_field, bitsec_field_rewrap): at most FieldKeyring.maxTokenBytes.
@inline(__always)
func fieldTokenArg(_ p: UnsafePointer<UInt8>?, _ len: UInt) throws(BitsecError) -> UnsafeRawBufferPointer {
    try bytesArg(UnsafeRawPointer(p), len, "token", lengthName: "token_len", max: FieldKeyring.maxTokenBytes)
}

/// A Fernet token: at most FernetKeyring.maxTokenBytes.
@inline(__always)
func fernetTokenArg(_ p: UnsafePointer<CChar>?, _ len: UInt) throws(BitsecError) -> UnsafeRawBufferPointer {
    try bytesArg(UnsafeRawPointer(p), len, "token", lengthName: "token_len", max: FernetKeyring.maxTokenBytes)
}

/// A field context (associated data): at most FieldFormat.maxContextBytes.
@inline(__always)
func contextArg(_ p: UnsafePointer<CChar>?, _ len: UInt) throws(BitsecError) -> UnsafeRawBufferPointer {
    try bytesArg(UnsafeRawPointer(p), len, "context", lengthName: "context_len", max: FieldFormat.maxContextBytes)
}

/// The two TTL arguments of the Fernet functions. zeroMeansNone: bitsec_fernet_decrypt's
/// ttl_seconds (0 = no limit, negative refused by the core); exact: the *_ttl functions' ttl
/// (BITSEC_FERNET_NO_TTL (-1) = no limit, 0 and up exactly as cryptography's ttl), checked
/// before the token is looked at.
enum FernetTTL {
    case zeroMeansNone(Int64)
    case exact(Int64)

    /// The exact form's limit, checked before the other arguments (nil: no limit).
    func checkedLimit() throws(BitsecError) -> Int64? {
        guard case .exact(let ttl) = self else { return nil }
        guard ttl >= -1 else { throw .invalid("ttl must be BITSEC_FERNET_NO_TTL (-1) or 0 and up") }
        return ttl == -1 ? nil : ttl
    }
}

/// A document of a permission check (principal, packed request, claims, permission list,
/// context): at most PermissionService.maxPrincipalBytes.
@inline(__always)
func documentArg(_ p: UnsafePointer<CChar>?, _ len: UInt, _ name: StaticString) throws(BitsecError) -> UnsafeRawBufferPointer {
    try bytesArg(UnsafeRawPointer(p), len, name, max: PermissionService.maxPrincipalBytes)
}

/// A permission ("resource:action"): at most PermissionService.maxPermissionBytes.
@inline(__always)
func permissionArg(_ p: UnsafePointer<CChar>?, _ len: UInt) throws(BitsecError) -> ByteSlice {
    byteSlice(try bytesArg(UnsafeRawPointer(p), len, "permission", max: PermissionService.maxPermissionBytes))
}

/// A resource context document; length 0 is the empty context.
@inline(__always)
func optionalContextArg(_ p: UnsafePointer<CChar>?, _ len: UInt) throws(BitsecError) -> ResourceContext {
    len == 0 ? ResourceContext() : try ResourceContext.parse(try documentArg(p, len, "context"))
}

@inline(__always)
func byteSlice(_ raw: UnsafeRawBufferPointer) -> ByteSlice {
    ByteSlice(raw.baseAddress?.assumingMemoryBound(to: UInt8.self), raw.count)
}

/// A base32 secret argument, bounded by BITSEC_TOTP_MAX_SECRET_TEXT_BYTES.
@inline(__always)
func secretArg(_ p: UnsafePointer<CChar>?, _ len: UInt) throws(BitsecError) -> UnsafeRawBufferPointer {
    try boundedBytesArg(p, len, "secret", max: OTPLimits.maxSecretTextBytes)
}

/// A code as typed, bounded by BITSEC_TOTP_MAX_CODE_BYTES.
@inline(__always)
func codeArg(_ p: UnsafePointer<CChar>?, _ len: UInt) throws(BitsecError) -> UnsafeRawBufferPointer {
    try boundedBytesArg(p, len, "code", max: OTPLimits.maxCodeBytes)
}

/// A user identifier: UTF-8 (invalid sequences are refused, never repaired, so two byte
/// strings can never name one user), at most BITSEC_TOTP_MAX_USER_BYTES; length 0 is none.
@inline(__always)
func userArg(_ p: UnsafePointer<CChar>?, _ len: UInt, required: Bool = false) throws(BitsecError) -> String? {
    let raw = try boundedBytesArg(p, len, "user", max: OTPLimits.maxUserBytes)
    guard raw.count > 0 else {
        if required { throw .invalid("user is required") }
        return nil
    }
    guard let s = String(validating: raw.bindMemory(to: UInt8.self), as: UTF8.self) else { throw .invalid("user is not valid UTF-8") }
    return s
}

/// An int32_t argument that must lie in `range`.
@inline(__always)
func int32Arg(_ v: Int32, _ name: StaticString, _ range: ClosedRange<Int32>) throws(BitsecError) -> Int {
    guard range.contains(v) else { throw .invalid("\(name) must be \(range.lowerBound) to \(range.upperBound), not \(v)") }
    return Int(v)
}

/// A sealed TOTP secret (bitsec_totp_secret_seal's output): at most TOTPService.maxSealedSecretBytes.
@inline(__always)
func sealedArg(_ p: UnsafePointer<CChar>?, _ len: UInt) throws(BitsecError) -> UnsafeRawBufferPointer {
    try boundedBytesArg(p, len, "sealed", max: TOTPService.maxSealedSecretBytes)
}

/// A rate-limit, brute-force or login-guard key (pointer, length) as a String: 1 to
/// BITSEC_RATE_LIMIT_MAX_KEY_BYTES bytes of UTF-8. Keys are almost always ASCII (addresses,
/// most account names): a specialised scan decides those, and only other input goes through
/// the generic validator, whose unspecialised call from this module costs more than a take.
@inline(__always)
func keyArg(_ p: UnsafePointer<CChar>?, _ len: UInt, _ name: StaticString = "key",
            max: Int = RateLimitLimits.maxKeyBytes) throws(BitsecError) -> String {
    guard len > 0 else { throw .invalid("\(name) is empty") }
    guard len <= UInt(max) else {
        throw .tooLarge("\(name): \(len) bytes exceeds the limit of \(max)")
    }
    guard let p else { throw .invalid("\(name) is NULL") }
    let bytes = UnsafeBufferPointer(start: UnsafeRawPointer(p).assumingMemoryBound(to: UInt8.self), count: Int(len))
    var ascii = true
    for b in bytes where b >= 0x80 {
        ascii = false
        break
    }
    if !ascii && !UTF8Validation.isValid(bytes) { throw .invalid("\(name) is not valid UTF-8") }
    return String(decoding: bytes, as: UTF8.self)
}

/// The category of a NULL or empty category argument.
let defaultCategory = "default"

/// Looks a category up straight from the caller's bytes: NULL or empty means "default"; a
/// name longer than any category can be, or bytes matching none, is `notFound`.
@inline(__always)
func categoryArg(_ s: RateLimitService, _ p: UnsafePointer<CChar>?, _ len: UInt) throws(BitsecError) -> RateLimitCategory {
    if p == nil || len == 0 { return try s.category(defaultCategory) }
    guard len <= UInt(RateLimitLimits.maxCategoryBytes) else {
        throw .init(.notFound, "category: \(len) bytes exceeds the limit of \(RateLimitLimits.maxCategoryBytes)")
    }
    return try s.category(utf8: UnsafeRawBufferPointer(start: UnsafeRawPointer(p), count: Int(len)))
}

/// Writes a rate-limit decision into the caller's BITSEC_RATE_LIMIT_DECISION_LEN array.
@inline(__always)
func write(_ d: RateLimitDecision, _ out: UnsafeMutablePointer<Int64>) {
    let p = d.packed
    out[0] = p.0; out[1] = p.1; out[2] = p.2; out[3] = p.3; out[4] = p.4; out[5] = p.5; out[6] = p.6
}

/// Writes a brute-force status into the caller's optional BITSEC_BRUTEFORCE_STATUS_LEN array.
@inline(__always)
func write(_ s: FailureStatus, _ out: UnsafeMutablePointer<Int64>?) {
    guard let out else { return }
    out[0] = s.blocked ? 1 : 0; out[1] = s.failures; out[2] = s.remainingAttempts
    out[3] = s.blockedUntil; out[4] = s.retryAfter; out[5] = s.flags
}

/// An optional text argument: NULL or empty is nil.
func optionalText(_ p: UnsafePointer<CChar>?, _ len: UInt, _ name: StaticString) throws(BitsecError) -> String? {
    guard p != nil, len > 0 else { return nil }
    return try textArg(p, len, name, max: 1024)
}

/// A (pointer, size_t length) pair as bytes, the length checked against `max` first (message
/// "name: N bytes exceeds the limit of max"). NULL with length 0 is the empty input.
@inline(__always)
func boundedBytesArg(_ p: UnsafePointer<CChar>?, _ len: UInt, _ name: StaticString, max: Int) throws(BitsecError) -> UnsafeRawBufferPointer {
    guard len <= UInt(max) else { throw .tooLarge("\(name): \(len) bytes exceeds the limit of \(max)") }
    return try bytesArg(UnsafeRawPointer(p), Int(len), name, max: max)
}

/// A UTF-8 text argument given as (pointer, length).
func textArg(_ p: UnsafePointer<CChar>?, _ len: UInt, _ name: StaticString, max: Int = Limits.maxArgumentBytes) throws(BitsecError) -> String {
    let n = try sizeArg(len, name, max: max)
    let raw = try bytesArg(UnsafeRawPointer(p), n, name, max: max)
    let bytes = raw.bindMemory(to: UInt8.self)
    guard UTF8Validation.isValid(bytes) else { throw .invalid("\(name) is not valid UTF-8") }
    return String(decoding: bytes, as: UTF8.self)
}

/// A NUL-terminated UTF-8 argument, read up to `max` bytes.
func cStringArg(_ p: UnsafePointer<CChar>?, _ name: StaticString, max: Int = 4096) throws(BitsecError) -> String {
    guard let p else { throw .invalid("\(name) is NULL") }
    let n = strnlen(p, max + 1)
    guard n <= max else { throw .tooLarge("\(name) exceeds \(max) bytes") }
    let bytes = UnsafeRawBufferPointer(start: p, count: n).bindMemory(to: UInt8.self)
    guard UTF8Validation.isValid(bytes) else { throw .invalid("\(name) is not valid UTF-8") }
    return String(decoding: bytes, as: UTF8.self)
}

// MARK: - Outputs

/// Writes a variable-size result with the `out_buf, out_cap, *out_len` convention:
/// `*out_len` always receives the size of the result; if `out_cap` is too small (or
/// `out_buf` is NULL) the call fails with `bufferTooSmall` and nothing else is written.
/// When there is room, a NUL is written after the result (not counted in `*out_len`).
func writeOutput(_ bytes: UnsafeRawBufferPointer, _ out: UnsafeMutablePointer<CChar>?, _ cap: UInt, _ outLen: UnsafeMutablePointer<UInt>?) throws(BitsecError) {
    guard let outLen else { throw .invalid("out_len is NULL") }
    outLen.pointee = UInt(bytes.count)
    guard let out, cap >= UInt(bytes.count) else {
        throw BitsecError(.bufferTooSmall, "output needs \(bytes.count) bytes, out_cap is \(cap)")
    }
    if let base = bytes.baseAddress, bytes.count > 0 { memcpy(out, base, bytes.count) }
    if cap > UInt(bytes.count) { out[bytes.count] = 0 }
}

func writeOutput(_ bytes: [UInt8], _ out: UnsafeMutablePointer<CChar>?, _ cap: UInt, _ outLen: UnsafeMutablePointer<UInt>?) throws(BitsecError) {
    try bytes.withRawBytes { (raw) throws(BitsecError) in try writeOutput(raw, out, cap, outLen) }
}

/// Copies a result into a fresh `malloc` block (NUL-terminated) for `bitsec_free`.
func allocOutput(_ bytes: [UInt8], _ out: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?, _ outLen: UnsafeMutablePointer<UInt>?) throws(BitsecError) {
    guard let out else { throw .invalid("out is NULL") }
    out.pointee = nil
    guard let block = malloc(bytes.count + 1) else { throw BitsecError(.internalError, "out of memory") }
    let p = block.assumingMemoryBound(to: CChar.self)
    bytes.withUnsafeBytes { raw in if let b = raw.baseAddress { memcpy(p, b, raw.count) } }
    p[bytes.count] = 0
    out.pointee = p
    outLen?.pointee = UInt(bytes.count)
}

/// The caller's output buffer as a bounded raw buffer (nil when out_buf is NULL).
@inline(__always)
func outBuffer(_ p: UnsafeMutableRawPointer?, _ cap: UInt) -> UnsafeMutableRawBufferPointer? {
    guard let p else { return nil }
    return UnsafeMutableRawBufferPointer(start: p, count: Int(min(cap, UInt(Int.max))))
}

/// Reports a result the core wrote (or measured): `*out_len` = size; too small -> error;
/// a NUL after the result when there is room.
@inline(__always)
func finishOutput(_ length: Int, _ out: UnsafeMutableRawPointer?, _ cap: UInt, _ outLen: UnsafeMutablePointer<UInt>) throws(BitsecError) {
    outLen.pointee = UInt(length)
    guard let out, cap >= UInt(length) else {
        throw BitsecError(.bufferTooSmall, "output needs \(length) bytes, out_cap is \(cap)")
    }
    if cap > UInt(length) { out.storeBytes(of: 0, toByteOffset: length, as: UInt8.self) }
}

/// A required out-pointer: NULL is an invalid argument.
@inline(__always)
func requiredOut<T>(_ p: UnsafeMutablePointer<T>?, _ name: StaticString) throws(BitsecError) -> UnsafeMutablePointer<T> {
    guard let p else { throw .invalid("\(name) is NULL") }
    return p
}

/// A required out-pointer, cleared to `initial` before anything else can fail.
@inline(__always)
func clearedOut<T>(_ p: UnsafeMutablePointer<T>?, _ name: StaticString, _ initial: T) throws(BitsecError) -> UnsafeMutablePointer<T> {
    guard let p else { throw .invalid("\(name) is NULL") }
    p.pointee = initial
    return p
}

/// Stores through an optional out-pointer.
@inline(__always)
func store<T>(_ p: UnsafeMutablePointer<T>?, _ value: T) { p?.pointee = value }
