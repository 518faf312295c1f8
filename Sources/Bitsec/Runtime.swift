// Runtime lifecycle, memory, and the foundation's proofs of life (OpenSSL, Redis).
internal import BitsecCore
internal import Glibc

/// Opens a runtime from a JSON configuration document (see docs/configuration.md).
///
/// config, config_len: the document, UTF-8 JSON, not necessarily NUL-terminated, at most
/// BITSEC_MAX_CONFIG_BYTES; caller-owned, only read during the call.
/// out_rt: receives the new handle (set to NULL on failure); release it with
/// bitsec_runtime_close.
/// Returns BITSEC_OK; BITSEC_E_INVALID_ARGUMENT (NULL argument); BITSEC_E_TOO_LARGE;
/// BITSEC_E_CONFIG (invalid JSON, unknown field, bad value, unreadable secret: the detail
/// from bitsec_last_error names the field, never a secret).
/// Thread safety: safe from any thread. The runtime is safe to share between threads.
/// Since: 0.1.0
@c(bitsec_runtime_open)
public func bitsec_runtime_open(_ config: UnsafePointer<CChar>?, _ config_len: UInt, _ out_rt: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    abiCall { () throws(BitsecError) in
        let out_rt = try requiredOut(out_rt, "out_rt")
        out_rt.pointee = nil
        let n = try sizeArg(config_len, "config_len", max: Limits.maxConfigBytes)
        let bytes = try bytesArg(UnsafeRawPointer(config), n, "config", max: Limits.maxConfigBytes)
        let runtime = try Runtime.open(config: bytes)
        out_rt.pointee = OpaquePointer(Unmanaged.passRetained(RuntimeHandle(runtime)).toOpaque())
    }
}

/// Opens a runtime from a JSON configuration file.
///
/// path: NUL-terminated file path; caller-owned. The file is read once, at most
/// BITSEC_MAX_CONFIG_BYTES.
/// out_rt: receives the new handle (NULL on failure); release it with bitsec_runtime_close.
/// Returns BITSEC_OK; BITSEC_E_INVALID_ARGUMENT; BITSEC_E_TOO_LARGE; BITSEC_E_CONFIG (also
/// when the file cannot be read).
/// Thread safety: safe from any thread.
/// Since: 0.1.0
@c(bitsec_runtime_open_file)
public func bitsec_runtime_open_file(_ path: UnsafePointer<CChar>?, _ out_rt: UnsafeMutablePointer<OpaquePointer?>?) -> Int32 {
    abiCall { () throws(BitsecError) in
        let out_rt = try requiredOut(out_rt, "out_rt")
        out_rt.pointee = nil
        let p = try cStringArg(path, "path")
        let runtime = try Runtime.open(configFile: p)
        out_rt.pointee = OpaquePointer(Unmanaged.passRetained(RuntimeHandle(runtime)).toOpaque())
    }
}

/// Closes a runtime: waits for calls in flight on other threads to return, then releases
/// connections and keys (wiped). NULL is a no-op; closing twice is a no-op. Later calls on
/// the closed handle return BITSEC_E_CLOSED.
///
/// rt: the handle, or NULL.
/// Thread safety: safe from any thread; calls in flight complete first.
/// Since: 0.1.0
@c(bitsec_runtime_close)
public func bitsec_runtime_close(_ rt: OpaquePointer?) {
    guard let rt else { return }
    let handle = Unmanaged<RuntimeHandle>.fromOpaque(UnsafeRawPointer(rt)).takeUnretainedValue()
    guard handle.magic == RuntimeHandle.liveMagic else { return }
    handle.close()
}

/// Describes what a runtime has configured, as JSON, without any secret: versions, and per
/// section its settings (null for an absent section).
///
/// rt: the runtime.
/// out_buf, out_cap: caller-owned buffer. out_len: receives the JSON's length (excluding the
/// NUL that is written after it when there is room), also when the buffer is too small.
/// Returns BITSEC_OK; BITSEC_E_BUFFER_TOO_SMALL (*out_len holds the size needed);
/// BITSEC_E_INVALID_ARGUMENT; BITSEC_E_CLOSED.
/// Thread safety: safe from any thread.
/// Since: 0.1.0
@c(bitsec_runtime_describe)
public func bitsec_runtime_describe(_ rt: OpaquePointer?, _ out_buf: UnsafeMutablePointer<CChar>?, _ out_cap: UInt, _ out_len: UnsafeMutablePointer<UInt>?) -> Int32 {
    withRuntime(rt) { (r) throws(BitsecError) in
        try writeOutput(r.describe().serialized, out_buf, out_cap, out_len)
    }
}

/// As bitsec_runtime_describe, but the library allocates the result.
///
/// out_json: receives a NUL-terminated JSON string allocated by the library (NULL on
/// failure); release it with bitsec_free. out_len: optional, receives its length.
/// Returns BITSEC_OK; BITSEC_E_INVALID_ARGUMENT; BITSEC_E_CLOSED.
/// Thread safety: safe from any thread.
/// Since: 0.1.0
@c(bitsec_runtime_describe_alloc)
public func bitsec_runtime_describe_alloc(_ rt: OpaquePointer?, _ out_json: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?, _ out_len: UnsafeMutablePointer<UInt>?) -> Int32 {
    out_json?.pointee = nil
    return withRuntime(rt) { (r) throws(BitsecError) in
        try allocOutput(r.describe().serialized, out_json, out_len)
    }
}

/// Releases memory that a bitsec function allocated and documented as "release with
/// bitsec_free". NULL is a no-op. Never pass memory from anywhere else.
///
/// Thread safety: safe from any thread.
/// Since: 0.1.0
@c(bitsec_free)
public func bitsec_free(_ p: UnsafeMutableRawPointer?) { free(p) }

/// Fills a buffer with cryptographically secure random bytes from OpenSSL (RAND_bytes).
///
/// out_buf: caller-owned buffer of len bytes (NULL only when len is 0).
/// len: at most BITSEC_MAX_ARGUMENT_BYTES.
/// Returns BITSEC_OK; BITSEC_E_INVALID_ARGUMENT; BITSEC_E_TOO_LARGE; BITSEC_E_CRYPTO.
/// Thread safety: safe from any thread.
/// Since: 0.1.0
@c(bitsec_random_bytes)
public func bitsec_random_bytes(_ out_buf: UnsafeMutablePointer<UInt8>?, _ len: UInt) -> Int32 {
    abiCall { () throws(BitsecError) in
        let n = try sizeArg(len, "len")
        guard n > 0 else { return }
        let out_buf = try requiredOut(out_buf, "out_buf")
        try OpenSSL.randomBytes(UnsafeMutableRawBufferPointer(start: out_buf, count: n))
    }
}

/// Sends PING to the runtime's Redis through its connection pool.
///
/// rt: the runtime (its configuration must have a redis section).
/// out_rtt_us: optional; receives the round trip in microseconds.
/// Returns BITSEC_OK; BITSEC_E_NOT_CONFIGURED (no redis section); BITSEC_E_BACKEND_UNAVAILABLE
/// (down, refused, no answer within command_timeout_ms, authentication failed; the detail
/// says which); BITSEC_E_CLOSED; BITSEC_E_INVALID_ARGUMENT.
/// Thread safety: safe from any thread; the pool is shared.
/// Since: 0.1.0
@c(bitsec_redis_ping)
public func bitsec_redis_ping(_ rt: OpaquePointer?, _ out_rtt_us: UnsafeMutablePointer<Int64>?) -> Int32 {
    withRuntime(rt) { (r) throws(BitsecError) in
        let rtt = try r.requireRedis().ping()
        store(out_rtt_us, rtt)
    }
}
