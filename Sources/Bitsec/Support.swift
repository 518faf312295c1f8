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
            abiCall { () throws(BitsecError) in try body(r) }
        }
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

/// Stores through an optional out-pointer.
@inline(__always)
func store<T>(_ p: UnsafeMutablePointer<T>?, _ value: T) { p?.pointee = value }
