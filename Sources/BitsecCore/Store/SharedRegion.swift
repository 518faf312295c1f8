internal import Glibc
internal import Synchronization

/// A memory-mapped region file shared by every process on the host that opens the same name:
/// the `host` store. It holds the tables of the `host` placement (`SharedTable`), a 128-bit
/// placement secret they hash keys with, and 16 generation counters that processes bump to tell
/// each other to reload something.
///
/// **The file.** `<directory>/bitsec-<name>.region` (directory default `/dev/shm`), mode 0600,
/// owned by the effective user. Its full size is reserved with `posix_fallocate` when it is
/// created, so a full file system is an error at open (naming the directory and the bytes
/// needed), never a SIGBUS when a page is first touched later. It is created and initialised
/// under a temporary name and published with `link()`, so no process ever maps a half-written
/// header; when two processes create it at once, one `link()` wins and the other opens the
/// winner's file. The first process decides the size: later openers use the existing file
/// whatever `maxBytes` they pass.
///
/// **Opening an existing file** refuses, with a message saying what to do: a file that is not
/// a regular file or is a symbolic link, not owned by the effective uid, readable or writable by
/// group or others, without the magic, of another layout version, or shorter than its header
/// says.
///
/// **Layout** (all integers native-endian: the region never leaves the host):
/// - `0` magic (8 bytes), `8` layout version (u32), `12` header size (u32), `16` size (u64),
///   `24` placement secret (16 bytes from OpenSSL's DRBG), `40` allocation offset (u64),
///   `48` table count (u64), `64` 16 generation counters (u64 each), `256` the region mutex
///   (robust, process-shared), `512` the table directory: 64 entries of 128 bytes (name up to
///   95 bytes, value size, shard count, layout parameter, max keys, offset).
/// - From `headerSize` (16 KiB): the tables, each allocated once by the first process that asks
///   for it (bump allocation under the region mutex, 64-byte aligned), never freed.
///
/// A table is published in the directory only after its memory is initialised and the
/// allocation offset moved past it, so a process killed during an allocation leaves at worst
/// unreachable bytes, never a table two processes disagree on.
public final class SharedRegion: @unchecked Sendable {
    /// The region name (1-64 bytes of `A-Za-z0-9_-.`).
    public let name: String
    /// The region file.
    public let path: String
    /// Bytes mapped (the size the region was created with).
    public let size: Int
    let base: UnsafeMutableRawPointer
    let k0: UInt64
    let k1: UInt64

    /// "BITSECRG" as bytes in the file.
    static let magic: UInt64 = 0x4752_4345_5354_4942
    /// The layout version this build reads and writes; a region of another version is refused.
    public static let layoutVersion: UInt32 = 1
    static let headerSize = 16384
    static let maxTables = 64
    static let generationCount = 16
    static let defaultDirectory = "/dev/shm"
    /// 64 MiB: the default size of a container's /dev/shm.
    public static let defaultMaxBytes = 64 << 20
    static let minBytes = 64 << 10
    static let maxBytes = 1 << 40

    // Header offsets.
    static let offMagic = 0, offVersion = 8, offHeaderSize = 12, offSize = 16, offSecret = 24
    static let offBump = 40, offTableCount = 48, offGenerations = 64, offMutex = 256, offDirectory = 512
    static let dirEntrySize = 128, dirNameBytes = 96

    private init(name: String, path: String, base: UnsafeMutableRawPointer, size: Int) {
        self.name = name
        self.path = path
        self.base = base
        self.size = size
        k0 = base.load(fromByteOffset: Self.offSecret, as: UInt64.self)
        k1 = base.load(fromByteOffset: Self.offSecret + 8, as: UInt64.self)
    }

    deinit {
        munmap(base, size)
    }

    /// Opens (creating it if needed) the region `<directory>/bitsec-<name>.region`.
    /// - name: 1-64 bytes of `A-Za-z0-9_-.`.
    /// - directory: where the file lives (default `/dev/shm`, a tmpfs: the region is memory).
    /// - maxBytes: the size when this call creates the region (64 KiB to 1 TiB, default 64 MiB),
    ///   reserved at once; an existing region keeps its size.
    /// Throws `config` for a bad name or size and for a file it refuses (see the type's doc),
    /// `io` when the file cannot be created, reserved or mapped.
    public static func open(name: String, directory: String = "/dev/shm",
                            maxBytes: Int = SharedRegion.defaultMaxBytes) throws(BitsecError) -> SharedRegion {
        let nameBytes = Array(name.utf8)
        guard (1...64).contains(nameBytes.count), nameBytes.allSatisfy({ b in
            (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a) || b == 0x5f || b == 0x2d || b == 0x2e
        }) else {
            throw .config("store.host.name must be 1-64 bytes of A-Za-z0-9_-.")
        }
        guard !directory.isEmpty, !directory.utf8.contains(0) else {
            throw .config("store.host.directory must be a directory path")
        }
        guard maxBytes >= minBytes, maxBytes <= Self.maxBytes else {
            throw .config("store.host.max_bytes must be from \(minBytes) to \(Self.maxBytes) bytes")
        }
        let dir = directory.count > 1 && directory.hasSuffix("/") ? String(directory.dropLast()) : directory
        let path = dir + "/bitsec-" + name + ".region"
        // A creation that loses the race opens the winner's file; a file removed between the
        // two steps is created again (a few rounds at most).
        for _ in 0..<8 {
            if let r = try openExisting(name: name, path: path) { return r }
            if let r = try create(name: name, dir: dir, path: path, size: maxBytes) { return r }
        }
        throw BitsecError(.io, "region \(path): could not be created or opened (it keeps appearing and disappearing)")
    }

    private static func errnoText(_ e: Int32) -> String {
        guard let s = strerror(e) else { return "errno \(e)" }
        return String(cString: s)
    }

    /// Maps and validates an existing region; nil when there is no file at `path`.
    private static func openExisting(name: String, path: String) throws(BitsecError) -> SharedRegion? {
        let fd = Glibc.open(path, O_RDWR | O_NOFOLLOW | O_CLOEXEC)
        if fd < 0 {
            let e = errno
            if e == ENOENT { return nil }
            if e == ELOOP { throw .config("region \(path) is a symbolic link; bitsec refuses to follow it: remove it") }
            throw BitsecError(.io, "region \(path): cannot open: \(errnoText(e))")
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw BitsecError(.io, "region \(path): fstat: \(errnoText(errno))") }
        guard (st.st_mode & S_IFMT) == S_IFREG else {
            throw .config("region \(path) is not a regular file: remove it or use another name")
        }
        guard st.st_uid == geteuid() else {
            throw .config("region \(path) is owned by uid \(st.st_uid), not by this process's uid \(geteuid()): refusing to share state with another user; remove the file or use another name")
        }
        guard st.st_mode & 0o077 == 0 else {
            throw .config("region \(path) has mode \(String(st.st_mode & 0o777, radix: 8)), which lets group or others read or write it: it must be 0600; remove the file or use another name")
        }
        let fileSize = Int(st.st_size)
        guard fileSize >= headerSize else {
            throw .config("region \(path) is \(fileSize) bytes, shorter than a region header (\(headerSize)): remove the file or use another name")
        }
        guard let p = mmap(nil, fileSize, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0),
              p != UnsafeMutableRawPointer(bitPattern: -1) else {
            throw BitsecError(.io, "region \(path): mmap of \(fileSize) bytes failed: \(errnoText(errno))")
        }
        let magic = p.load(fromByteOffset: offMagic, as: UInt64.self)
        let version = p.load(fromByteOffset: offVersion, as: UInt32.self)
        let header = Int(p.load(fromByteOffset: offHeaderSize, as: UInt32.self))
        let recorded = p.load(fromByteOffset: offSize, as: UInt64.self)
        guard magic == Self.magic else {
            munmap(p, fileSize)
            throw .config("region \(path) is not a bitsec region (wrong magic): remove the file or use another name")
        }
        guard version == layoutVersion else {
            munmap(p, fileSize)
            throw .config("region \(path) was created by an incompatible bitsec layout \(version), this build uses \(layoutVersion); remove the file or use another name")
        }
        guard header == headerSize, recorded >= UInt64(headerSize), recorded <= UInt64(fileSize) else {
            munmap(p, fileSize)
            throw .config("region \(path) is \(fileSize) bytes but its header says \(recorded): the file was truncated or damaged; remove it or use another name")
        }
        // Map exactly the recorded size (a longer file keeps its tail unused).
        let size = Int(recorded)
        if size < fileSize { munmap(p + size, fileSize - size) }
        return SharedRegion(name: name, path: path, base: p, size: size)
    }

    /// Creates, reserves and initialises a region under a temporary name, then publishes it.
    /// Nil when another process published one first (the caller opens theirs).
    private static func create(name: String, dir: String, path: String, size: Int) throws(BitsecError) -> SharedRegion? {
        var rnd = (try? OpenSSL.randomBytes(count: 24)) ?? []
        guard rnd.count == 24 else { throw .crypto("region \(path): no random bytes for the placement secret") }
        let tag = rnd[16..<24].map { String($0, radix: 16) }.joined()
        let tmp = dir + "/.bitsec-" + name + ".region." + String(getpid()) + "." + tag
        let fd = Glibc.open(tmp, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            throw BitsecError(.io, "region \(path): cannot create a file in \(dir): \(errnoText(errno))")
        }
        defer {
            close(fd)
            unlink(tmp)
        }
        _ = fchmod(fd, 0o600)
        let rc = posix_fallocate(fd, 0, off_t(size))
        guard rc == 0 else {
            if rc == ENOSPC || rc == EFBIG || rc == EDQUOT {
                throw BitsecError(.io, "region \(path): \(dir) has no room for \(size) bytes (\(errnoText(rc))): free space there, lower store.host.max_bytes or choose another store.host.directory")
            }
            throw BitsecError(.io, "region \(path): reserving \(size) bytes in \(dir) failed: \(errnoText(rc))")
        }
        guard let p = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0),
              p != UnsafeMutableRawPointer(bitPattern: -1) else {
            throw BitsecError(.io, "region \(path): mmap of \(size) bytes failed: \(errnoText(errno))")
        }
        // The file is zero-filled: only the non-zero fields are written.
        p.storeBytes(of: Self.magic, toByteOffset: offMagic, as: UInt64.self)
        p.storeBytes(of: layoutVersion, toByteOffset: offVersion, as: UInt32.self)
        p.storeBytes(of: UInt32(headerSize), toByteOffset: offHeaderSize, as: UInt32.self)
        p.storeBytes(of: UInt64(size), toByteOffset: offSize, as: UInt64.self)
        for i in 0..<16 { p.storeBytes(of: rnd[i], toByteOffset: offSecret + i, as: UInt8.self) }
        for i in 0..<rnd.count { rnd[i] = 0 }
        p.storeBytes(of: UInt64(headerSize), toByteOffset: offBump, as: UInt64.self)
        guard RobustMutex.initialise(p + offMutex) else {
            munmap(p, size)
            throw .internalError("region \(path): cannot initialise a process-shared robust mutex")
        }
        if link(tmp, path) != 0 {
            let e = errno
            munmap(p, size)
            if e == EEXIST { return nil }
            throw BitsecError(.io, "region \(path): cannot publish the region file: \(errnoText(e))")
        }
        return SharedRegion(name: name, path: path, base: p, size: size)
    }

    // MARK: generations

    @inline(__always)
    func atomic64(_ offset: Int) -> UnsafeMutablePointer<Atomic<UInt64>> {
        (base + offset).assumingMemoryBound(to: Atomic<UInt64>.self)
    }

    /// Generation counter `i` (0-15) of the region: processes bump one to tell the others that
    /// something changed (a reload). 0 for an index out of range.
    public func generation(_ i: Int) -> UInt64 {
        guard i >= 0, i < Self.generationCount else { return 0 }
        return atomic64(Self.offGenerations + 8 * i).pointee.load(ordering: .acquiring)
    }

    /// Increments generation counter `i` (0-15) and returns its new value (0 for an index out
    /// of range).
    @discardableResult
    public func bumpGeneration(_ i: Int) -> UInt64 {
        guard i >= 0, i < Self.generationCount else { return 0 }
        return atomic64(Self.offGenerations + 8 * i).pointee.wrappingAdd(1, ordering: .acquiringAndReleasing).newValue
    }

    // MARK: table directory

    /// Where a table lives in the region.
    struct TableSlot {
        let offset: Int
        let shardCount: Int
    }

    /// Finds the table `name`, or allocates it with `bytes` bytes initialised by `initialise`
    /// (the memory is zero; `initialise` sets up what is not). Every process must ask with the
    /// same value size, layout and maxKeys.
    func table(name: String, valueSize: Int, layout: Int, maxKeys: Int, shardCount: Int, bytes: Int,
               initialise: (UnsafeMutableRawPointer) -> Bool) throws(BitsecError) -> TableSlot {
        let nameBytes = Array(name.utf8)
        guard !nameBytes.isEmpty, nameBytes.count < Self.dirNameBytes, !nameBytes.contains(0) else {
            throw .config("table name \"\(name)\" must be 1-\(Self.dirNameBytes - 1) bytes to live in region \(self.name)")
        }
        let m = base + Self.offMutex
        let got = RobustMutex.lock(m)
        guard got != .unrecoverable else {
            throw BitsecError(.io, "region \(path): its lock is unrecoverable; remove the file (every process using it must reopen)")
        }
        // The directory is consistent whoever died holding this lock (see the type's doc).
        if got == .ownerDied { RobustMutex.markConsistent(m) }
        defer { RobustMutex.unlock(m) }
        let count = Int(min(UInt64(Self.maxTables), base.load(fromByteOffset: Self.offTableCount, as: UInt64.self)))
        for i in 0..<count {
            let e = base + Self.offDirectory + i * Self.dirEntrySize
            guard Self.nameMatches(e, nameBytes) else { continue }
            let vs = Int(e.load(fromByteOffset: 96, as: UInt32.self))
            let sc = Int(e.load(fromByteOffset: 100, as: UInt32.self))
            let lay = Int(e.load(fromByteOffset: 104, as: Int64.self))
            let mk = Int(e.load(fromByteOffset: 112, as: Int64.self))
            let off = Int(e.load(fromByteOffset: 120, as: UInt64.self))
            if mk != maxKeys {
                throw .config("table \(name) in region \(self.name) was created with max_keys \(mk), this configuration asks \(maxKeys); use the same value in every process or another region name")
            }
            if lay != layout {
                throw .config("table \(name) in region \(self.name) was created with layout parameter \(lay), this configuration asks \(layout); use the same value in every process or another region name")
            }
            if vs != valueSize || sc != shardCount {
                throw .config("table \(name) in region \(self.name) was created with \(vs)-byte values in \(sc) shards, this build uses \(valueSize) bytes in \(shardCount); use another region name")
            }
            guard off >= Self.headerSize, off <= size, bytes <= size - off else {
                throw .config("table \(name) in region \(path) lies outside the region: the file is damaged; remove it")
            }
            return TableSlot(offset: off, shardCount: sc)
        }
        guard count < Self.maxTables else {
            throw .config("region \(self.name) already holds \(Self.maxTables) tables, the most a region holds; table \(name) needs another region name")
        }
        let bump = Int(min(UInt64(size), base.load(fromByteOffset: Self.offBump, as: UInt64.self)))
        let off = (bump + 63) & ~63
        guard off <= size, bytes <= size - off else {
            let left = max(0, size - off)
            throw .config("region \(self.name) (\(path), \(size) bytes) has \(left) bytes left, table \(name) needs \(bytes) bytes (max_keys \(maxKeys)): raise store.host.max_bytes (and remove the file so it is created again) or lower max_keys")
        }
        // Allocation first: a process killed after this line leaks the bytes, never shares them.
        base.storeBytes(of: UInt64(off + bytes), toByteOffset: Self.offBump, as: UInt64.self)
        guard initialise(base + off) else {
            throw .internalError("region \(path): cannot initialise table \(name)")
        }
        let e = base + Self.offDirectory + count * Self.dirEntrySize
        for i in 0..<Self.dirNameBytes { e.storeBytes(of: i < nameBytes.count ? nameBytes[i] : 0, toByteOffset: i, as: UInt8.self) }
        e.storeBytes(of: UInt32(valueSize), toByteOffset: 96, as: UInt32.self)
        e.storeBytes(of: UInt32(shardCount), toByteOffset: 100, as: UInt32.self)
        e.storeBytes(of: Int64(layout), toByteOffset: 104, as: Int64.self)
        e.storeBytes(of: Int64(maxKeys), toByteOffset: 112, as: Int64.self)
        e.storeBytes(of: UInt64(off), toByteOffset: 120, as: UInt64.self)
        atomicMemoryFence(ordering: .sequentiallyConsistent)
        atomic64(Self.offTableCount).pointee.store(UInt64(count + 1), ordering: .releasing)
        return TableSlot(offset: off, shardCount: shardCount)
    }

    private static func nameMatches(_ e: UnsafeMutableRawPointer, _ name: [UInt8]) -> Bool {
        for i in 0..<dirNameBytes {
            let b = e.load(fromByteOffset: i, as: UInt8.self)
            if i < name.count { if b != name[i] { return false } } else { return b == 0 }
        }
        return true
    }

    /// Runs `body` holding the region mutex (tables use it to serialise rare whole-table work:
    /// a recount after a repair, the reinitialisation of an unrecoverable shard lock). False
    /// when the region lock itself is unrecoverable.
    func withRegionLock(_ body: () -> Void) -> Bool {
        let m = base + Self.offMutex
        let got = RobustMutex.lock(m)
        guard got != .unrecoverable else { return false }
        if got == .ownerDied { RobustMutex.markConsistent(m) }
        body()
        RobustMutex.unlock(m)
        return true
    }
}

/// A robust, process-shared `pthread_mutex_t` in region memory. A process that dies holding
/// one does not wedge the others: the next locker gets `ownerDied`, repairs what the lock
/// protects and marks it consistent (`pthread_mutex_consistent`, done by `lock` after the
/// caller's repair through `markConsistent`).
enum RobustMutex {
    enum Acquired: Equatable {
        case locked
        /// The previous owner died holding it: repair, then `markConsistent`, then use.
        case ownerDied
        /// The lock is unusable (an owner-died lock released without being marked consistent).
        case unrecoverable
        /// `tryLock` only: held by someone else.
        case busy
    }

    static var size: Int { MemoryLayout<pthread_mutex_t>.size }

    /// Initialises a mutex in (zeroed) region memory; 64 bytes are reserved for it.
    static func initialise(_ p: UnsafeMutableRawPointer) -> Bool {
        guard MemoryLayout<pthread_mutex_t>.size <= 64 else { return false }
        var attr = pthread_mutexattr_t()
        guard pthread_mutexattr_init(&attr) == 0 else { return false }
        defer { pthread_mutexattr_destroy(&attr) }
        guard pthread_mutexattr_setpshared(&attr, Int32(PTHREAD_PROCESS_SHARED)) == 0,
              pthread_mutexattr_setrobust(&attr, Int32(PTHREAD_MUTEX_ROBUST)) == 0 else { return false }
        return pthread_mutex_init(p.assumingMemoryBound(to: pthread_mutex_t.self), &attr) == 0
    }

    /// Try first, then wait: glibc's `pthread_mutex_lock` waits forever on a lock that became
    /// unrecoverable, where `pthread_mutex_trylock` reports it (an uncontended try costs what
    /// the lock would).
    @inline(__always)
    static func lock(_ p: UnsafeMutableRawPointer) -> Acquired {
        let m = p.assumingMemoryBound(to: pthread_mutex_t.self)
        let tried = classify(pthread_mutex_trylock(m))
        if tried != .busy { return tried }
        return classify(pthread_mutex_lock(m))
    }

    @inline(__always)
    static func tryLock(_ p: UnsafeMutableRawPointer) -> Acquired {
        classify(pthread_mutex_trylock(p.assumingMemoryBound(to: pthread_mutex_t.self)))
    }

    @inline(__always)
    private static func classify(_ rc: Int32) -> Acquired {
        switch rc {
        case 0: return .locked
        case EOWNERDEAD: return .ownerDied
        case EBUSY: return .busy
        default: return .unrecoverable
        }
    }

    @inline(__always)
    static func markConsistent(_ p: UnsafeMutableRawPointer) {
        _ = pthread_mutex_consistent(p.assumingMemoryBound(to: pthread_mutex_t.self))
    }

    @inline(__always)
    static func unlock(_ p: UnsafeMutableRawPointer) {
        _ = pthread_mutex_unlock(p.assumingMemoryBound(to: pthread_mutex_t.self))
    }
}
