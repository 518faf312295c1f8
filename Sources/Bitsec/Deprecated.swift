// The names the C API had before 0.2.0, when its companions did not yet follow one
// bitsec_<family>_<verb> scheme. Each is the new function under its old name, kept exported
// for one release and marked deprecated in the header.
internal import BitsecCore

/// Deprecated: use bitsec_permission_reason_name (same arguments, same result).
/// Since: 0.1.0; deprecated since 0.2.0, removed in the next ABI version.
@c(bitsec_permission_reason)
public func bitsec_permission_reason(_ reason: Int32) -> UnsafePointer<CChar> {
    bitsec_permission_reason_name(reason)
}

/// Deprecated: use bitsec_field_keys_reload (same arguments, same result).
/// Since: 0.1.0; deprecated since 0.2.0, removed in the next ABI version.
@c(bitsec_fields_reload)
public func bitsec_fields_reload(_ rt: OpaquePointer?, _ section: UnsafePointer<CChar>?, _ section_len: UInt) -> Int32 {
    bitsec_field_keys_reload(rt, section, section_len)
}

/// Deprecated: use bitsec_field_rewrap (same arguments, same result).
/// Since: 0.1.0; deprecated since 0.2.0, removed in the next ABI version.
@c(bitsec_rewrap_field)
public func bitsec_rewrap_field(_ rt: OpaquePointer?, _ token: UnsafePointer<UInt8>?, _ token_len: UInt,
                                _ context: UnsafePointer<CChar>?, _ context_len: UInt, _ flags: UInt32,
                                _ out_buf: UnsafeMutablePointer<CChar>?, _ out_cap: UInt, _ out_len: UnsafeMutablePointer<UInt>?,
                                _ out_reason: UnsafeMutablePointer<Int32>?, _ out_rewrapped: UnsafeMutablePointer<Int32>?) -> Int32 {
    bitsec_field_rewrap(rt, token, token_len, context, context_len, flags, out_buf, out_cap, out_len, out_reason, out_rewrapped)
}

/// Deprecated: use bitsec_login_guard_client_key (same arguments, same result).
/// Since: 0.2.0 (the first name of bitsec_login_guard_client_key); deprecated, removed in the next ABI version.
@c(bitsec_client_key)
public func bitsec_client_key(_ rt: OpaquePointer?, _ client: UnsafePointer<CChar>?, _ client_len: UInt,
                              _ out_buf: UnsafeMutablePointer<CChar>?, _ out_cap: UInt, _ out_len: UnsafeMutablePointer<UInt>?) -> Int32 {
    bitsec_login_guard_client_key(rt, client, client_len, out_buf, out_cap, out_len)
}

/// Deprecated: use bitsec_backup_code_generate (same arguments, same result).
/// Since: 0.1.0; deprecated since 0.2.0, removed in the next ABI version.
@c(bitsec_backup_codes_generate)
public func bitsec_backup_codes_generate(_ rt: OpaquePointer?, _ count: Int32, _ out_buf: UnsafeMutablePointer<CChar>?, _ out_cap: UInt,
                                         _ out_len: UnsafeMutablePointer<UInt>?) -> Int32 {
    bitsec_backup_code_generate(rt, count, out_buf, out_cap, out_len)
}
