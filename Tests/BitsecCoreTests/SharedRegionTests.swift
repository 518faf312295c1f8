import Testing
import Glibc
import Dispatch
import BitsecCore

/// A fresh directory under /dev/shm (a tmpfs, like production) for one test's regions,
/// removed with everything in it by `remove()`.
final class RegionDir: Sendable {
    let path: String

    init() {
        var template = Array("/dev/shm/bitsec-test-XXXXXX".utf8CString)
        let p = template.withUnsafeMutableBufferPointer { b in b.baseAddress.flatMap { mkdtemp($0) } }
        path = p.map { String(cString: $0) } ?? "/dev/shm"
        #expect(p != nil, "mkdtemp under /dev/shm failed")
    }

    func file(_ name: String) -> String { path + "/bitsec-" + name + ".region" }

    func remove() {
        guard path != "/dev/shm", let d = opendir(path) else { return }
        while let e = readdir(d) {
            let name = withUnsafeBytes(of: e.pointee.d_name) { raw in
                String(cString: raw.bindMemory(to: CChar.self).baseAddress!)
            }
            if name == "." || name == ".." { continue }
            let full = path + "/" + name
            if umount2(full, 0) == 0 { rmdir(full); continue }
            if unlink(full) != 0 { rmdir(full) }
        }
        closedir(d)
        rmdir(path)
    }

    /// Names in the directory (other than . and ..).
    func entries() -> [String] {
        guard let d = opendir(path) else { return [] }
        defer { closedir(d) }
        var out: [String] = []
        while let e = readdir(d) {
            let name = withUnsafeBytes(of: e.pointee.d_name) { raw in
                String(cString: raw.bindMemory(to: CChar.self).baseAddress!)
            }
            if name != "." && name != ".." { out.append(name) }
        }
        return out.sorted()
    }
}

/// A table value for the store tests: a counter and a class (0 live with rank `n`, 1 idle,
/// 2 kept: rank nil).
struct Cell: FixedLayoutValue, Equatable {
    var n: Int64
    var kind: Int64

    static func storedSize(layout: Int) -> Int { 16 }
    init(n: Int64, kind: Int64 = 0) { self.n = n; self.kind = kind }
    init(loading p: UnsafeRawPointer, layout: Int) {
        n = p.loadUnaligned(as: Int64.self)
        kind = p.loadUnaligned(fromByteOffset: 8, as: Int64.self)
    }
    func store(to p: UnsafeMutableRawPointer, layout: Int) {
        p.storeBytes(of: n, as: Int64.self)
        p.storeBytes(of: kind, toByteOffset: 8, as: Int64.self)
    }

    static let idle: @Sendable (Cell, Int64) -> Bool = { v, _ in v.kind == 1 }
    static let rank: @Sendable (Cell, Int64) -> Int64? = { v, _ in v.kind == 2 ? nil : v.n }
}

func makeCells(_ placement: TablePlacement, name: String = "cells", maxKeys: Int) throws -> StateTable<Cell> {
    try StateTable<Cell>.make(placement, name: name, maxKeys: maxKeys, idle: Cell.idle, rank: Cell.rank)
}

/// Writes `value` into a table (inserting after makeRoom for an absent key); true when stored.
@discardableResult
func put(_ t: StateTable<Cell>, _ key: String, _ value: Cell) -> Bool {
    t.update(key, nowMs: 1000) { (e: inout Cell?, makeRoom: () -> Bool) -> Bool in
        if e != nil { e = value; return true }
        guard makeRoom() else { return false }
        e = value
        return true
    }
}

func get(_ t: StateTable<Cell>, _ key: String) -> Cell? {
    t.update(key, nowMs: 1000) { (e: inout Cell?, _: () -> Bool) -> Cell? in e }
}

private func vectors() throws -> JSONValue {
    var path = #filePath
    for _ in 0..<3 { path = String(path[..<(path.lastIndex(of: "/") ?? path.startIndex)]) }
    return try JSONReader.parse(try readFile(path + "/tests/vectors/siphash/vectors.json", limit: 1 << 20))
}

private func hex(_ s: String) -> [UInt8] {
    var out: [UInt8] = []
    var i = s.startIndex
    while i < s.endIndex {
        let j = s.index(i, offsetBy: 2)
        out.append(UInt8(s[i..<j], radix: 16) ?? 0)
        i = j
    }
    return out
}

private func le(_ v: UInt64) -> [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: v >> (8 * UInt64($0))) } }

@Suite struct SharedRegionTests {
    @Test func sipHashMatchesTheReferenceVectors() throws {
        let v = try vectors()
        let key = hex(v["key"]?.stringValue ?? "")
        #expect(key.count == 16)
        var k0: UInt64 = 0, k1: UInt64 = 0
        for i in (0..<8).reversed() { k0 = (k0 << 8) | UInt64(key[i]); k1 = (k1 << 8) | UInt64(key[8 + i]) }
        let expected = v["siphash24_128"]?.arrayValue ?? []
        #expect(expected.count == 64)
        for (i, e) in expected.enumerated() {
            let msg = (0..<i).map { UInt8($0) }
            let h = msg.withUnsafeBytes { SipHash24.hash128($0, k0: k0, k1: k1) }
            #expect(le(h.lo) + le(h.hi) == hex(e.stringValue ?? ""), "vector \(i)")
            // The string entry point hashes the same bytes.
            if msg.allSatisfy({ $0 < 0x80 }) {
                let s = String(decoding: msg, as: UTF8.self)
                let hs = SipHash24.hash128(s, k0: k0, k1: k1)
                #expect(hs.lo == h.lo && hs.hi == h.hi)
            }
        }
    }

    @Test func twoOpensOfOneNameShareEntriesAndGenerations() throws {
        let dir = RegionDir()
        defer { dir.remove() }
        let a = try SharedRegion.open(name: "orders-api", directory: dir.path, maxBytes: 1 << 20)
        let b = try SharedRegion.open(name: "orders-api", directory: dir.path, maxBytes: 1 << 20)
        #expect(a.path == dir.file("orders-api") && b.path == a.path)
        let ta = try makeCells(.host(a), maxKeys: 1000)
        let tb = try makeCells(.host(b), maxKeys: 1000)
        #expect(put(ta, "alice", Cell(n: 7)))
        #expect(get(tb, "alice") == Cell(n: 7))
        #expect(put(tb, "alice", Cell(n: 8)))
        #expect(get(ta, "alice") == Cell(n: 8))
        #expect(ta.count == 1 && tb.count == 1)
        #expect(ta.stats.entryCount == 1 && tb.stats.entryCount == 1)
        tb.remove("alice")
        #expect(get(ta, "alice") == nil)
        #expect(ta.stats.entryCount == 0)
        #expect(a.generation(3) == 0)
        #expect(b.bumpGeneration(3) == 1)
        #expect(a.bumpGeneration(3) == 2)
        #expect(b.generation(3) == 2)
        #expect(a.generation(16) == 0 && a.bumpGeneration(-1) == 0)
        // Another region name is another state.
        let c = try SharedRegion.open(name: "billing", directory: dir.path, maxBytes: 1 << 20)
        let tc = try makeCells(.host(c), maxKeys: 1000)
        #expect(put(ta, "bob", Cell(n: 1)))
        #expect(get(tc, "bob") == nil)
    }

    @Test func theFileIsPrivateReservedAndPublishedWithoutLeftovers() throws {
        let dir = RegionDir()
        defer { dir.remove() }
        let old = umask(0)
        let r = try SharedRegion.open(name: "svc", directory: dir.path, maxBytes: 1 << 20)
        umask(old)
        var st = stat()
        #expect(stat(r.path, &st) == 0)
        #expect(st.st_mode & 0o777 == 0o600)
        #expect(st.st_uid == geteuid())
        #expect(Int(st.st_size) == 1 << 20 && r.size == 1 << 20)
        #expect(Int(st.st_blocks) * 512 >= 1 << 20, "the whole size is reserved at creation")
        #expect(dir.entries() == ["bitsec-svc.region"], "no temporary file is left behind")
        // A later opener keeps the creator's size.
        let again = try SharedRegion.open(name: "svc", directory: dir.path, maxBytes: 4 << 20)
        #expect(again.size == 1 << 20)
    }

    @Test func concurrentCreatorsAllOpenOneRegion() throws {
        let dir = RegionDir()
        defer { dir.remove() }
        let n = 8
        let regions = Locked<[SharedRegion]>([])
        DispatchQueue.concurrentPerform(iterations: n) { _ in
            if let r = try? SharedRegion.open(name: "race", directory: dir.path, maxBytes: 1 << 20) {
                regions.with { $0.append(r) }
            }
        }
        let all = regions.with { $0 }
        #expect(all.count == n)
        let tables = try all.map { try makeCells(.host($0), maxKeys: 500) }
        #expect(put(tables[0], "k", Cell(n: 99)))
        for t in tables { #expect(get(t, "k") == Cell(n: 99)) }
        #expect(dir.entries() == ["bitsec-race.region"])
    }

    @Test func badNamesAndSizesAreConfigErrors() {
        let dir = RegionDir()
        defer { dir.remove() }
        for bad in ["", "a/b", "..\u{0}x", String(repeating: "a", count: 65), "é", "a b"] {
            expectError(.config, "store.host.name") { _ = try SharedRegion.open(name: bad, directory: dir.path, maxBytes: 1 << 20) }
        }
        expectError(.config, "max_bytes") { _ = try SharedRegion.open(name: "x", directory: dir.path, maxBytes: 1000) }
        expectError(.config, "max_bytes") { _ = try SharedRegion.open(name: "x", directory: dir.path, maxBytes: Int.max) }
        expectError(.io, "cannot create") { _ = try SharedRegion.open(name: "x", directory: dir.path + "/missing", maxBytes: 1 << 20) }
        #expect(dir.entries().isEmpty)
    }

    /// Rewrites bytes of a region file in place.
    private func poke(_ path: String, at offset: Int, _ bytes: [UInt8]) {
        let fd = open(path, O_WRONLY)
        #expect(fd >= 0)
        _ = bytes.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, off_t(offset)) }
        close(fd)
    }

    @Test func anIncompatibleLayoutVersionIsRefusedClearly() throws {
        let dir = RegionDir()
        defer { dir.remove() }
        do { _ = try SharedRegion.open(name: "v", directory: dir.path, maxBytes: 1 << 20) }
        poke(dir.file("v"), at: 8, le(99).prefix(4).map { $0 })
        expectError(.config, "created by an incompatible bitsec layout 99, this build uses \(SharedRegion.layoutVersion); remove the file or use another name") {
            _ = try SharedRegion.open(name: "v", directory: dir.path, maxBytes: 1 << 20)
        }
        poke(dir.file("v"), at: 0, Array("NOTBITSC".utf8))
        expectError(.config, "not a bitsec region") { _ = try SharedRegion.open(name: "v", directory: dir.path) }
    }

    @Test func aFileShorterThanItsHeaderSaysIsRefused() throws {
        let dir = RegionDir()
        defer { dir.remove() }
        do { _ = try SharedRegion.open(name: "t", directory: dir.path, maxBytes: 1 << 20) }
        #expect(truncate(dir.file("t"), 1 << 19) == 0)
        expectError(.config, "header says 1048576") { _ = try SharedRegion.open(name: "t", directory: dir.path) }
        #expect(truncate(dir.file("t"), 100) == 0)
        expectError(.config, "shorter than a region header") { _ = try SharedRegion.open(name: "t", directory: dir.path) }
    }

    @Test func aFileOfAnotherOwnerOrWithGroupAccessOrALinkIsRefused() throws {
        let dir = RegionDir()
        defer { dir.remove() }
        do { _ = try SharedRegion.open(name: "o", directory: dir.path, maxBytes: 1 << 20) }
        #expect(geteuid() == 0, "the ownership case needs root (chown to nobody)")
        #expect(chown(dir.file("o"), 65534, 65534) == 0)
        expectError(.config, "owned by uid 65534") { _ = try SharedRegion.open(name: "o", directory: dir.path) }
        #expect(chown(dir.file("o"), geteuid(), getegid()) == 0)
        #expect(chmod(dir.file("o"), 0o644) == 0)
        expectError(.config, "has mode 644") { _ = try SharedRegion.open(name: "o", directory: dir.path) }
        #expect(chmod(dir.file("o"), 0o600) == 0)
        _ = try SharedRegion.open(name: "o", directory: dir.path)
        #expect(symlink(dir.file("o"), dir.file("l")) == 0)
        expectError(.config, "symbolic link") { _ = try SharedRegion.open(name: "l", directory: dir.path) }
    }

    @Test func noRoomInTheDirectoryIsAnErrorAtOpenNamingTheDirectoryAndSize() throws {
        let dir = RegionDir()
        defer { dir.remove() }
        let small = dir.path + "/small"
        #expect(mkdir(small, 0o700) == 0)
        // A 256 KiB tmpfs: a 1 MiB region cannot be reserved there.
        #expect(mount("tmpfs", small, "tmpfs", 0, "size=256k,mode=0700") == 0, "mount a small tmpfs (needs CAP_SYS_ADMIN): errno \(errno)")
        defer { umount2(small, 0); rmdir(small) }
        expectError(.io, "\(small) has no room for 1048576 bytes") {
            _ = try SharedRegion.open(name: "big", directory: small, maxBytes: 1 << 20)
        }
        #expect(RegionDir.list(small).isEmpty, "the reservation left nothing behind")
        // What fits opens.
        let r = try SharedRegion.open(name: "fits", directory: small, maxBytes: 128 << 10)
        #expect(r.size == 128 << 10)
    }

    @Test func tablesMustAgreeAndMustFit() throws {
        let dir = RegionDir()
        defer { dir.remove() }
        let r = try SharedRegion.open(name: "tables", directory: dir.path, maxBytes: 1 << 20)
        _ = try makeCells(.host(r), name: "rate_limit:api", maxKeys: 1000)
        expectError(.config, "table rate_limit:api in region tables was created with max_keys 1000, this configuration asks 2000") {
            _ = try makeCells(.host(r), name: "rate_limit:api", maxKeys: 2000)
        }
        expectError(.config, "was created with layout parameter 0, this configuration asks 5") {
            _ = try StateTable<Cell>.make(.host(r), name: "rate_limit:api", maxKeys: 1000, layout: 5, idle: Cell.idle, rank: Cell.rank)
        }
        expectError(.config, "bytes left, table huge needs") { _ = try makeCells(.host(r), name: "huge", maxKeys: 1_000_000) }
        // The failed allocation took nothing: a table that fits still opens.
        _ = try makeCells(.host(r), name: "small", maxKeys: 500)
    }
}

/// A value behind a lock, for collecting results from concurrent test threads.
final class Locked<T>: @unchecked Sendable {
    private var value: T
    private var m = pthread_mutex_t()
    init(_ v: T) { value = v; pthread_mutex_init(&m, nil) }
    func with<R>(_ body: (inout T) -> R) -> R {
        pthread_mutex_lock(&m)
        defer { pthread_mutex_unlock(&m) }
        return body(&value)
    }
}

extension RegionDir {
    static func list(_ path: String) -> [String] {
        guard let d = opendir(path) else { return [] }
        defer { closedir(d) }
        var out: [String] = []
        while let e = readdir(d) {
            let name = withUnsafeBytes(of: e.pointee.d_name) { raw in
                String(cString: raw.bindMemory(to: CChar.self).baseAddress!)
            }
            if name != "." && name != ".." { out.append(name) }
        }
        return out
    }
}
