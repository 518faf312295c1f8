/// Library version, declared once: tools/gen_abi.py writes it into include/bitsec.h and the
/// Python package (`make header`). Package.swift's `abiMajor` (the SONAME suffix) must equal `abi`.
public enum BitsecVersion {
    public static let major: UInt32 = 0
    public static let minor: UInt32 = 3
    public static let patch: UInt32 = 0
    /// MAJOR*10000 + MINOR*100 + PATCH, as zstd does.
    public static let number: UInt32 = major * 10000 + minor * 100 + patch
    public static let string: StaticString = "0.3.0"
    /// Bumped on any incompatible change of the C ABI; it is the SONAME suffix.
    public static let abi: Int32 = 1
}
