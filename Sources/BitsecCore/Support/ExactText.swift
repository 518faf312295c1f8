/// Identifiers compared byte for byte.
///
/// Swift's `String` `==`, and its hashing (so `Set<String>` and `[String: _]` keys), use
/// Unicode canonical equivalence: "café" written with U+00E9 equals "cafe" followed by
/// U+0301. Identifiers taken from a token (`iss`, `aud`, `kid`, scope names) must match the
/// configured or required ones exactly, as RFC 7519 section 2 compares StringOrURI values
/// ("no transformations or canonicalizations are applied") and as the permission engine
/// compares names (`ByteSlice`): the UTF-8 bytes are compared, nothing is normalised.
extension String {
    /// True when both strings have exactly the same UTF-8 bytes. No allocation: the byte
    /// counts first (constant time for native strings), then the bytes, eight at a time
    /// (`bytesEqual`, as the permission engine compares names).
    @inline(__always)
    func sameBytes(_ other: String) -> Bool {
        let a = utf8, b = other.utf8
        let n = a.count
        guard n == b.count else { return false }
        guard n > 0 else { return true }
        let fast = a.withContiguousStorageIfAvailable { pa in
            b.withContiguousStorageIfAvailable { pb in bytesEqual(pa.baseAddress!, pb.baseAddress!, n) }
        }
        if let fast, let equal = fast { return equal }
        return a.elementsEqual(b)
    }

    /// True when the string's UTF-8 bytes are exactly `bytes`.
    @inline(__always)
    func sameBytes(_ bytes: UnsafeRawBufferPointer.SubSequence) -> Bool {
        let a = utf8
        return a.count == bytes.count && a.elementsEqual(bytes)
    }
}

extension Sequence where Element == String {
    /// Whether a member has exactly the bytes of `s` (`contains` would use canonical
    /// equivalence).
    @inline(__always)
    func containsBytes(of s: String) -> Bool { contains { $0.sameBytes(s) } }
}

/// A `String` as a dictionary or set key by its exact bytes: equal and hashed on its UTF-8
/// bytes, where `String` itself is equal and hashed up to canonical equivalence.
struct ExactText: Hashable, Sendable {
    let text: String

    init(_ text: String) { self.text = text }

    static func == (a: ExactText, b: ExactText) -> Bool { a.text.sameBytes(b.text) }

    func hash(into h: inout Hasher) {
        let u = text.utf8
        h.combine(u.count)
        if u.withContiguousStorageIfAvailable({ h.combine(bytes: UnsafeRawBufferPointer($0)) }) == nil {
            // Not native UTF-8 (never the case for strings bitsec makes): the same bytes, copied.
            Array(u).withUnsafeBytes { h.combine(bytes: $0) }
        }
    }
}
