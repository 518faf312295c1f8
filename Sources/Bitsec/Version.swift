// Versions and status texts.
internal import BitsecCore

/// The library version as text, e.g. "0.1.0".
///
/// Returns a static NUL-terminated string; never free it.
/// Thread safety: safe from any thread.
/// Since: 0.1.0
@c(bitsec_version_string)
public func bitsec_version_string() -> UnsafePointer<CChar> {
    UnsafeRawPointer(BitsecVersion.string.utf8Start).assumingMemoryBound(to: CChar.self)
}

/// The library version as one number: 10000 * MAJOR + 100 * MINOR + PATCH (as BITSEC_VERSION_NUMBER).
///
/// Thread safety: safe from any thread.
/// Since: 0.1.0
@c(bitsec_version_number)
public func bitsec_version_number() -> UInt32 { BitsecVersion.number }

/// The ABI version of the loaded library (as BITSEC_ABI_VERSION; the SONAME suffix).
///
/// A binding must refuse a library whose ABI version differs from the one it was written for.
/// Thread safety: safe from any thread.
/// Since: 0.1.0
@c(bitsec_abi_version)
public func bitsec_abi_version() -> Int32 { BitsecVersion.abi }

/// A static description of a status code ("invalid argument", ...), needing no handle.
///
/// code: any value; unknown codes give "unknown status".
/// Returns a static NUL-terminated string; never free it.
/// Thread safety: safe from any thread.
/// Since: 0.1.0
@c(bitsec_strerror)
public func bitsec_strerror(_ code: Int32) -> UnsafePointer<CChar> {
    let text: StaticString = Status(rawValue: code)?.message ?? "unknown status"
    return UnsafeRawPointer(text.utf8Start).assumingMemoryBound(to: CChar.self)
}

/// The detail message of the calling thread's last failed bitsec call ("" if none yet).
///
/// Messages name fields, sizes and limits; they never contain key material, token
/// contents or plaintext. Successful calls do not clear it: read it right after a call
/// that returned a code other than BITSEC_OK.
/// Returns a NUL-terminated string owned by the library, valid on this thread until its
/// next failing bitsec call; never free it.
/// Thread safety: per thread; safe from any thread.
/// Since: 0.1.0
@c(bitsec_last_error)
public func bitsec_last_error() -> UnsafePointer<CChar> { lastErrorPointer() }
