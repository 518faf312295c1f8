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
        return memcmp(a, b, count) == 0
    }

    @inline(__always)
    public func equals(_ p: UnsafePointer<UInt8>, _ n: Int) -> Bool {
        guard count == n else { return false }
        guard n > 0, let a = base else { return true }
        return memcmp(a, p, n) == 0
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
        guard count > 0, let b = base, let hit = memchr(b, Int32(byte), count) else { return nil }
        return UnsafeRawPointer(hit) - UnsafeRawPointer(b)
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

/// Splits a NUL-separated packed buffer into fields; nil when the count is outside `range`.
/// A NUL inside a value therefore changes the field count and is refused, never reinterpreted.
@inline(__always)
func splitPacked(_ raw: UnsafeRawBufferPointer, into fields: inout (ByteSlice, ByteSlice, ByteSlice, ByteSlice, ByteSlice), max: Int) -> Int? {
    guard let base = raw.baseAddress?.assumingMemoryBound(to: UInt8.self), raw.count > 0 else {
        fields.0 = .empty
        return 1
    }
    var n = 0
    var start = 0
    let count = raw.count
    while true {
        let rest = count - start
        let hit = rest > 0 ? memchr(base + start, 0, rest) : nil
        let end = hit.map { UnsafeRawPointer($0) - UnsafeRawPointer(base) } ?? count
        let s = ByteSlice(base + start, end - start)
        switch n {
        case 0: fields.0 = s
        case 1: fields.1 = s
        case 2: fields.2 = s
        case 3: fields.3 = s
        case 4: fields.4 = s
        default: return nil
        }
        n += 1
        if n > max { return nil }
        if hit == nil { break }
        start = end + 1
    }
    return n
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

    public static func parse(_ raw: UnsafeRawBufferPointer) throws(BitsecError) -> PrincipalView {
        var f: (ByteSlice, ByteSlice, ByteSlice, ByteSlice, ByteSlice) = (.empty, .empty, .empty, .empty, .empty)
        guard let n = splitPacked(raw, into: &f, max: 5), n == 4 || n == 5 else {
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

    public static func parse(_ raw: UnsafeRawBufferPointer) throws(BitsecError) -> ResourceContext {
        var c = ResourceContext()
        guard raw.count > 0 else { return c }
        var f: (ByteSlice, ByteSlice, ByteSlice, ByteSlice, ByteSlice) = (.empty, .empty, .empty, .empty, .empty)
        guard let n = splitPacked(raw, into: &f, max: 3), n == 3 else {
            throw .invalid("context must be 3 NUL-separated fields (owner_id, tenant, department) or empty")
        }
        c.owner = f.0; c.tenant = f.1; c.department = f.2
        return c
    }
}
