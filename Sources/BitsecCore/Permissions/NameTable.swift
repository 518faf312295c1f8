internal import Glibc

/// Interned names (resources, actions, roles, scope verbs): bytes -> dense index, looked
/// up without allocating. Built once per compiled policy and immutable afterwards.
final class NameTable: @unchecked Sendable {
    let names: [String]
    var count: Int { names.count }
    private let mask: Int
    private let slots: UnsafeMutablePointer<Int32>  // -1: empty; else the name's index
    private let hashes: UnsafeMutablePointer<UInt64>
    private let offsets: UnsafeMutablePointer<Int>  // count + 1
    private let bytes: UnsafeMutablePointer<UInt8>

    /// `names` must be unique (the policy reader guarantees it).
    init(_ names: [String]) {
        self.names = names
        var cap = 8
        while cap < names.count * 2 { cap <<= 1 }
        mask = cap - 1
        slots = .allocate(capacity: cap)
        slots.initialize(repeating: -1, count: cap)
        hashes = .allocate(capacity: max(names.count, 1))
        offsets = .allocate(capacity: names.count + 1)
        let total = names.reduce(0) { $0 + $1.utf8.count }
        bytes = .allocate(capacity: max(total, 1))
        var off = 0
        for (i, name) in names.enumerated() {
            offsets[i] = off
            for b in name.utf8 { bytes[off] = b; off += 1 }
            let h = Self.hash(bytes + offsets[i], off - offsets[i])
            hashes[i] = h
            var s = Int(truncatingIfNeeded: h) & mask
            while slots[s] >= 0 { s = (s + 1) & mask }
            slots[s] = Int32(i)
        }
        offsets[names.count] = off
    }

    deinit {
        slots.deallocate()
        hashes.deallocate()
        offsets.deallocate()
        bytes.deallocate()
    }

    /// A word-at-a-time multiplicative hash (names are short; the table is private to one
    /// policy and rebuilt on reload, so flooding it needs the policy author's cooperation).
    @inline(__always)
    static func hash(_ p: UnsafePointer<UInt8>, _ n: Int) -> UInt64 {
        let raw = UnsafeRawPointer(p)
        var h = UInt64(truncatingIfNeeded: n) &* 0x9E37_79B9_7F4A_7C15
        var i = 0
        while i + 8 <= n {
            h = (h ^ raw.loadUnaligned(fromByteOffset: i, as: UInt64.self)) &* 0xBF58_476D_1CE4_E5B9
            h ^= h >> 31
            i += 8
        }
        if i < n {
            var t: UInt64
            if n >= 8 {
                // The last 8 bytes, overlapping the ones already mixed.
                t = raw.loadUnaligned(fromByteOffset: n - 8, as: UInt64.self)
            } else {
                t = 0
                var shift: UInt64 = 0
                while i < n { t |= UInt64(p[i]) << shift; shift += 8; i += 1 }
            }
            h = (h ^ t) &* 0x94D0_49BB_1331_11EB
            h ^= h >> 29
        }
        return h
    }

    /// The index of `s`, or -1.
    @inline(__always)
    func lookup(_ s: ByteSlice) -> Int {
        guard let p = s.base else { return -1 }
        let n = s.count
        let h = Self.hash(p, n)
        var i = Int(truncatingIfNeeded: h) & mask
        while true {
            let k = Int(slots[i])
            if k < 0 { return -1 }
            if hashes[k] == h {
                let o = offsets[k]
                if offsets[k + 1] - o == n && bytesEqual(bytes + o, p, n) { return k }
            }
            i = (i + 1) & mask
        }
    }

    func lookup(_ name: String) -> Int {
        var a = Array(name.utf8)
        return a.withUnsafeMutableBufferPointer { b in lookup(ByteSlice(UnsafePointer(b.baseAddress), b.count)) }
    }

    /// True when name `k` equals `s`.
    @inline(__always)
    func matches(_ k: Int, _ s: ByteSlice) -> Bool {
        let o = offsets[k]
        return s.equals(UnsafePointer(bytes + o), offsets[k + 1] - o)
    }
}
