internal import Glibc

/// A borrowed run of bytes from a caller's buffer, valid only during the call that received
/// it. Decisions compare names and ids as bytes, so the hot path never builds a `String`.
public struct ByteSlice: @unchecked Sendable {
    public let base: UnsafePointer<UInt8>?
    public let count: Int

    @inline(__always)
    public init(_ base: UnsafePointer<UInt8>?, _ count: Int) {
        self.base = count > 0 ? base : nil
        self.count = count > 0 ? count : 0
    }

    public static let empty = ByteSlice(nil, 0)

    @inline(__always) public var isEmpty: Bool { count == 0 }

    @inline(__always)
    public func equals(_ other: ByteSlice) -> Bool {
        guard count == other.count else { return false }
        guard count > 0, let a = base, let b = other.base else { return true }
        return bytesEqual(a, b, count)
    }

    @inline(__always)
    public func equals(_ p: UnsafePointer<UInt8>, _ n: Int) -> Bool {
        guard count == n else { return false }
        guard n > 0, let a = base else { return true }
        return bytesEqual(a, p, n)
    }

    /// True for the one-byte slice "*".
    @inline(__always) public var isStar: Bool { count == 1 && base?.pointee == 0x2A }

    @inline(__always)
    public subscript(i: Int) -> UInt8 { base.map { $0[i] } ?? 0 }

    /// The bytes after `i` (exclusive) up to the end.
    @inline(__always)
    public func suffix(after i: Int) -> ByteSlice { ByteSlice(base.map { $0 + (i + 1) }, count - i - 1) }

    @inline(__always)
    public func prefix(_ n: Int) -> ByteSlice { ByteSlice(base, n) }

    /// The index of the first `byte`, or nil.
    @inline(__always)
    public func firstIndex(of byte: UInt8) -> Int? {
        guard let b = base else { return nil }
        var i = 0
        while i < count {
            if b[i] == byte { return i }
            i += 1
        }
        return nil
    }

    /// For messages and audit events only (never on the hot path of an allowed decision).
    public var string: String {
        guard let base, count > 0 else { return "" }
        return String(decoding: UnsafeBufferPointer(start: base, count: count), as: UTF8.self)
    }

    /// Calls `body` for each non-empty token separated by spaces, tabs or commas.
    @inline(__always)
    public func forEachToken(_ body: (ByteSlice) -> Bool) {
        guard let b = base else { return }
        var i = 0
        while i < count {
            while i < count, Self.isSeparator(b[i]) { i += 1 }
            let start = i
            while i < count, !Self.isSeparator(b[i]) { i += 1 }
            if i > start, !body(ByteSlice(b + start, i - start)) { return }
        }
    }

    @inline(__always)
    static func isSeparator(_ c: UInt8) -> Bool { c == 0x20 || c == 0x2C || c == 0x09 || c == 0x0A }
}

/// Names and ids are short: an inline comparison beats a call to memcmp.
@inline(__always)
func bytesEqual(_ a: UnsafePointer<UInt8>, _ b: UnsafePointer<UInt8>, _ n: Int) -> Bool {
    var i = 0
    let ra = UnsafeRawPointer(a), rb = UnsafeRawPointer(b)
    while i + 8 <= n {
        if ra.loadUnaligned(fromByteOffset: i, as: UInt64.self) != rb.loadUnaligned(fromByteOffset: i, as: UInt64.self) { return false }
        i += 8
    }
    while i < n {
        if a[i] != b[i] { return false }
        i += 1
    }
    return true
}

/// The index of the first NUL at or after `from`, or `count`: 8 bytes per step (the
/// classic has-zero-byte test; its lowest flagged byte is always a real NUL).
@inline(__always)
func nextNul(_ base: UnsafePointer<UInt8>, _ from: Int, _ count: Int) -> Int {
    var i = from
    let raw = UnsafeRawPointer(base)
    while i + 8 <= count {
        let v = UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: i, as: UInt64.self))
        let m = (v &- 0x0101_0101_0101_0101) & ~v & 0x8080_8080_8080_8080
        if m != 0 { return i + m.trailingZeroBitCount >> 3 }
        i += 8
    }
    while i < count {
        if base[i] == 0 { return i }
        i += 1
    }
    return count
}

/// Splits a NUL-separated packed buffer into at most `max` (<= 5) fields; returns the
/// field count, or nil when there are more. A NUL inside a value therefore changes the
/// field count and is refused, never reinterpreted.
@inline(__always)
func splitPacked(_ raw: UnsafeRawBufferPointer, _ f: inout (ByteSlice, ByteSlice, ByteSlice, ByteSlice, ByteSlice), max: Int) -> Int? {
    guard let base = raw.baseAddress?.assumingMemoryBound(to: UInt8.self), raw.count > 0 else {
        f.0 = .empty
        return 1
    }
    let count = raw.count
    let c0 = nextNul(base, 0, count)
    f.0 = ByteSlice(base, c0)
    if c0 == count { return 1 }
    let c1 = nextNul(base, c0 + 1, count)
    f.1 = ByteSlice(base + c0 + 1, c1 - c0 - 1)
    if c1 == count { return 2 }
    let c2 = nextNul(base, c1 + 1, count)
    f.2 = ByteSlice(base + c1 + 1, c2 - c1 - 1)
    if c2 == count { return max >= 3 ? 3 : nil }
    let c3 = nextNul(base, c2 + 1, count)
    f.3 = ByteSlice(base + c2 + 1, c3 - c2 - 1)
    if c3 == count { return max >= 4 ? 4 : nil }
    let c4 = nextNul(base, c3 + 1, count)
    f.4 = ByteSlice(base + c3 + 1, c4 - c3 - 1)
    if c4 == count { return max >= 5 ? 5 : nil }
    return nil
}

/// The principal of a decision: the fields of a verified token's claims (or given
/// explicitly), borrowed from the caller's packed buffer.
///
/// Packed form (C ABI): `id NUL roles NUL tenant NUL department [NUL scopes]`. Roles and
/// scopes are separated by spaces, tabs or commas. Four fields: the principal carries no
/// scopes (roles alone decide); five fields: it carries scopes (possibly none at all, which
/// then allows nothing).
public struct PrincipalView: @unchecked Sendable {
    public var id: ByteSlice = .empty
    public var roles: ByteSlice = .empty
    public var tenant: ByteSlice = .empty
    public var department: ByteSlice = .empty
    public var scopes: ByteSlice = .empty
    public var hasScopes = false

    public init() {}

    @inline(__always)
    public static func parse(_ raw: UnsafeRawBufferPointer) throws(BitsecError) -> PrincipalView {
        var f: (ByteSlice, ByteSlice, ByteSlice, ByteSlice, ByteSlice) = (.empty, .empty, .empty, .empty, .empty)
        guard let n = splitPacked(raw, &f, max: 5), n == 4 || n == 5 else {
            throw .invalid("principal must be 4 or 5 NUL-separated fields (id, roles, tenant, department[, scopes])")
        }
        var p = PrincipalView()
        p.id = f.0; p.roles = f.1; p.tenant = f.2; p.department = f.3
        if n == 5 { p.scopes = f.4; p.hasScopes = true }
        return p
    }
}

/// What the caller knows about the resource: its owner, tenant and department. Empty
/// fields are absent. Packed form: `owner_id NUL tenant NUL department` (exactly three
/// fields), or an empty buffer for no context.
public struct ResourceContext: @unchecked Sendable {
    public var owner: ByteSlice = .empty
    public var tenant: ByteSlice = .empty
    public var department: ByteSlice = .empty

    public init() {}

    @inline(__always)
    public static func parse(_ raw: UnsafeRawBufferPointer) throws(BitsecError) -> ResourceContext {
        var c = ResourceContext()
        guard raw.count > 0 else { return c }
        var f: (ByteSlice, ByteSlice, ByteSlice, ByteSlice, ByteSlice) = (.empty, .empty, .empty, .empty, .empty)
        guard let n = splitPacked(raw, &f, max: 3), n == 3 else {
            throw .invalid("context must be 3 NUL-separated fields (owner_id, tenant, department) or empty")
        }
        c.owner = f.0; c.tenant = f.1; c.department = f.2
        return c
    }
}

/// A whole request in one buffer, for bindings where each argument of a foreign call costs
/// (ctypes: ~0.1 us per argument): `permission NUL principal-fields [NUL context-fields]`.
/// The field count says which parts are present: 5 (principal without scopes), 6 (with
/// scopes), 8 and 9 (the same plus the three context fields). Other counts are refused.
public struct PackedRequest {
    public var permission: ByteSlice = .empty
    public var principal = PrincipalView()
    public var context = ResourceContext()

    @inline(__always)
    public static func parse(_ raw: UnsafeRawBufferPointer) throws(BitsecError) -> PackedRequest {
        guard let base = raw.baseAddress?.assumingMemoryBound(to: UInt8.self), raw.count > 0 else {
            throw .invalid("request is empty")
        }
        let count = raw.count
        // Start offsets and lengths of up to 9 fields.
        var starts = (0, 0, 0, 0, 0, 0, 0, 0, 0)
        var ends = (count, count, count, count, count, count, count, count, count)
        var n = 1
        var i = nextNul(base, 0, count)
        while i < count {
            guard n < 9 else { throw .invalid("request has more than 9 NUL-separated fields") }
            withUnsafeMutableBytes(of: &ends) { $0.storeBytes(of: i, toByteOffset: (n - 1) * MemoryLayout<Int>.stride, as: Int.self) }
            withUnsafeMutableBytes(of: &starts) { $0.storeBytes(of: i + 1, toByteOffset: n * MemoryLayout<Int>.stride, as: Int.self) }
            n += 1
            i = nextNul(base, i + 1, count)
        }
        guard n == 5 || n == 6 || n == 8 || n == 9 else {
            throw .invalid("request must have 5, 6, 8 or 9 NUL-separated fields (permission, principal, [context])")
        }
        func field(_ k: Int) -> ByteSlice {
            let s = withUnsafeBytes(of: starts) { $0.load(fromByteOffset: k * MemoryLayout<Int>.stride, as: Int.self) }
            let e = withUnsafeBytes(of: ends) { $0.load(fromByteOffset: k * MemoryLayout<Int>.stride, as: Int.self) }
            return ByteSlice(base + s, e - s)
        }
        var r = PackedRequest()
        r.permission = field(0)
        r.principal.id = field(1)
        r.principal.roles = field(2)
        r.principal.tenant = field(3)
        r.principal.department = field(4)
        let hasScopes = n == 6 || n == 9
        if hasScopes {
            r.principal.scopes = field(5)
            r.principal.hasScopes = true
        }
        if n >= 8 {
            let c = hasScopes ? 6 : 5
            r.context.owner = field(c)
            r.context.tenant = field(c + 1)
            r.context.department = field(c + 2)
        }
        return r
    }
}
