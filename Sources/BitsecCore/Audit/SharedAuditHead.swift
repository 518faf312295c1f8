internal import Glibc

/// The sidecar of a shared audit file (`<path>.shm`, mode 0600, owned by the process's
/// user): a small memory-mapped file that lets every process of a host append to one chain,
/// the way SQLite's WAL index lets processes share one log.
///
/// It holds a robust, process-shared mutex; the chain head (last sequence number, last
/// hash, committed length and identity of the current file); and the host-wide audit
/// counters (one bounded series table, `AuditMetrics.maxSeries` entries). A writer locks
/// the mutex, adopts the head, writes its batch, updates the head and unlocks. A writer that
/// died holding the mutex (`EOWNERDEAD`) may have left a torn tail past the committed
/// length: the next writer cuts the file back to it (those bytes were never acknowledged)
/// and marks the mutex consistent. A head that was being updated when its writer died, or
/// that does not match the file (another boot, a file replaced by hand), is rebuilt from the
/// file's last record, as a restart does.
///
/// Layout version 1 (offsets in bytes; all integers native-endian, the sidecar never leaves
/// its host):
/// 0 magic, 8 layout version, 16 boot id (36 bytes), 64 mutex (up to 64 bytes),
/// 128 head: last seq, committed length, file dev, file ino, file created (realtime s),
/// head valid, head dirty, 200 last hash (32 bytes),
/// 256 counters: written, dropped, dropped by timeout, rejected, fsyncs,
/// 320 sink errors (8), 384 sink records lost (8), 512 series used, 544 chain key
/// fingerprint (32 bytes; all zero until the first runtime sets it),
/// 1024 series table (`maxSeries` + 64 entries of 160 bytes; the last ones only for `_other`).
final class SharedAuditHead: @unchecked Sendable {
    static let magic: UInt64 = 0x4841_4345_5354_4942  // "BITSECAH"
    static let layoutVersion: UInt64 = 1
    static let seriesOffset = 1024
    static let seriesStride = 160
    /// Label sets beyond `maxSeries` count as subtype `_other`; these slots hold those.
    static let otherSlots = 64
    static let seriesSlots = AuditMetrics.maxSeries + otherSlots
    static let size = seriesOffset + seriesSlots * seriesStride
    /// Sink slots of the shared error counters.
    static let sinkSlots = ["file", "stdout", "syslog", "redis", "chain"]

    let path: String
    private let base: UnsafeMutableRawPointer
    private var mutex: UnsafeMutablePointer<pthread_mutex_t> { (base + 64).assumingMemoryBound(to: pthread_mutex_t.self) }

    private static func errnoText() -> String { String(cString: strerror(errno)) }

    init(filePath: String) throws(BitsecError) {
        path = filePath + ".shm"
        let fd = Glibc.open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw .config("audit file sink: cannot open the shared sidecar \(path): \(Self.errnoText())") }
        defer { Glibc.close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw .config("audit file sink: cannot stat \(path): \(Self.errnoText())") }
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw .config("audit file sink: \(path) is not a regular file") }
        guard st.st_uid == geteuid() else {
            throw .config("audit file sink: the shared sidecar \(path) belongs to another user (uid \(st.st_uid)); every process sharing a trail must run as its owner")
        }
        if st.st_mode & 0o777 != 0o600 { _ = fchmod(fd, 0o600) }
        // Initialisation is serialised by an flock of the sidecar (only here, briefly).
        guard flock(fd, LOCK_EX) == 0 else { throw .config("audit file sink: cannot lock \(path): \(Self.errnoText())") }
        defer { _ = flock(fd, LOCK_UN) }
        if Int(st.st_size) < Self.size {
            guard ftruncate(fd, off_t(Self.size)) == 0 else { throw .config("audit file sink: cannot size \(path): \(Self.errnoText())") }
        }
        guard let m = mmap(nil, Self.size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), m != MAP_FAILED else {
            throw .config("audit file sink: cannot map \(path): \(Self.errnoText())")
        }
        base = m
        let boot = Self.bootID()
        let magicNow = base.load(fromByteOffset: 0, as: UInt64.self)
        if magicNow == Self.magic {
            let v = base.load(fromByteOffset: 8, as: UInt64.self)
            guard v == Self.layoutVersion else {
                munmap(base, Self.size)
                throw .config("audit file sink: \(path) has layout version \(v), this bitsec reads \(Self.layoutVersion); stop every process using it and remove it")
            }
            // After a reboot the mutex may still say "held by" a thread that no longer exists
            // (and whose id may be reused), and the head may be ahead of what reached disk.
            if !Self.sameBoot(base, boot) { initialise(boot: boot) }
        } else if magicNow == 0 {
            initialise(boot: boot)
        } else {
            munmap(base, Self.size)
            throw .config("audit file sink: \(path) is not a bitsec audit sidecar")
        }
    }

    deinit { munmap(base, Self.size) }

    private static func bootID() -> [UInt8] {
        var b = [UInt8](repeating: 0, count: 36)
        let fd = Glibc.open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC)
        if fd >= 0 {
            _ = b.withUnsafeMutableBytes { read(fd, $0.baseAddress, 36) }
            Glibc.close(fd)
        }
        return b
    }

    private static func sameBoot(_ base: UnsafeMutableRawPointer, _ boot: [UInt8]) -> Bool {
        for k in 0..<36 where base.load(fromByteOffset: 16 + k, as: UInt8.self) != boot[k] { return false }
        return true
    }

    private func initialise(boot: [UInt8]) {
        memset(base, 0, Self.size)
        var attr = pthread_mutexattr_t()
        pthread_mutexattr_init(&attr)
        pthread_mutexattr_setpshared(&attr, Int32(PTHREAD_PROCESS_SHARED))
        pthread_mutexattr_setrobust(&attr, Int32(PTHREAD_MUTEX_ROBUST))
        pthread_mutex_init(mutex, &attr)
        pthread_mutexattr_destroy(&attr)
        for k in 0..<36 { base.storeBytes(of: boot[k], toByteOffset: 16 + k, as: UInt8.self) }
        base.storeBytes(of: Self.layoutVersion, toByteOffset: 8, as: UInt64.self)
        base.storeBytes(of: Self.magic, toByteOffset: 0, as: UInt64.self)
    }

    // MARK: - The lock

    /// Takes the mutex. Returns true when its previous owner died holding it (the caller
    /// repairs the file and the head before anything else).
    func lock() throws(BitsecError) -> Bool {
        var rc = pthread_mutex_lock(mutex)
        while rc == EINTR || rc == EAGAIN { rc = pthread_mutex_lock(mutex) }
        if rc == EOWNERDEAD {
            pthread_mutex_consistent(mutex)
            return true
        }
        guard rc == 0 else { throw .init(.io, "audit: the shared lock of \(path) is unusable (error \(rc)); stop every process using it and remove it") }
        return false
    }

    func unlock() { pthread_mutex_unlock(mutex) }

    /// Runs `body` under the mutex; a dead owner marks the head dirty so `body` rebuilds it.
    func withLock<R>(_ body: (_ ownerDied: Bool) throws(BitsecError) -> R) throws(BitsecError) -> R {
        let died = try lock()
        defer { unlock() }
        return try body(died)
    }

    // MARK: - The head (under the mutex)

    struct Head {
        var lastSeq: UInt64 = 0
        var committed: Int64 = 0
        var dev: UInt64 = 0
        var ino: UInt64 = 0
        var createdAt: Int64 = 0
        var lastHash: [UInt8] = ChainHasher.genesis
    }

    /// The head, or nil when it must be rebuilt from the file (never set, or its writer died
    /// while updating it).
    func readHead() -> Head? {
        guard base.load(fromByteOffset: 176, as: UInt64.self) == 1, base.load(fromByteOffset: 184, as: UInt64.self) == 0 else { return nil }
        var h = Head()
        h.lastSeq = base.load(fromByteOffset: 128, as: UInt64.self)
        h.committed = base.load(fromByteOffset: 136, as: Int64.self)
        h.dev = base.load(fromByteOffset: 144, as: UInt64.self)
        h.ino = base.load(fromByteOffset: 152, as: UInt64.self)
        h.createdAt = base.load(fromByteOffset: 160, as: Int64.self)
        h.lastHash = (0..<32).map { base.load(fromByteOffset: 200 + $0, as: UInt8.self) }
        return h
    }

    func writeHead(_ h: Head) {
        base.storeBytes(of: UInt64(1), toByteOffset: 184, as: UInt64.self)  // dirty while updating
        base.storeBytes(of: h.lastSeq, toByteOffset: 128, as: UInt64.self)
        base.storeBytes(of: h.committed, toByteOffset: 136, as: Int64.self)
        base.storeBytes(of: h.dev, toByteOffset: 144, as: UInt64.self)
        base.storeBytes(of: h.ino, toByteOffset: 152, as: UInt64.self)
        base.storeBytes(of: h.createdAt, toByteOffset: 160, as: Int64.self)
        for k in 0..<32 { base.storeBytes(of: k < h.lastHash.count ? h.lastHash[k] : 0, toByteOffset: 200 + k, as: UInt8.self) }
        base.storeBytes(of: UInt64(1), toByteOffset: 176, as: UInt64.self)
        base.storeBytes(of: UInt64(0), toByteOffset: 184, as: UInt64.self)
    }

    /// Marks the head for rebuilding (its writer died while updating it).
    func markHeadDirty() { base.storeBytes(of: UInt64(1), toByteOffset: 184, as: UInt64.self) }

    /// Every runtime on a shared chain must chain with the same function (SHA-256, or
    /// HMAC-SHA-256 with the same key): the first runtime stores a fingerprint of its chain
    /// function (the function applied to a fixed input: it reveals nothing about a key),
    /// later ones must match it. Call with the mutex held.
    func checkChainFingerprintLocked(_ fp: [UInt8]) -> Bool {
        var stored = [UInt8](repeating: 0, count: 32)
        for k in 0..<32 { stored[k] = base.load(fromByteOffset: 544 + k, as: UInt8.self) }
        if stored.allSatisfy({ $0 == 0 }) {
            for k in 0..<32 { base.storeBytes(of: k < fp.count ? fp[k] : 0, toByteOffset: 544 + k, as: UInt8.self) }
            return true
        }
        return OpenSSL.constantTimeEqual(stored, fp)
    }

    // MARK: - Host-wide counters

    enum Counter: Int { case written = 256, dropped = 264, droppedTimeout = 272, rejected = 280, fsyncs = 288 }

    private func counter(_ off: Int) -> UInt64 { base.load(fromByteOffset: off, as: UInt64.self) }
    private func addCounter(_ off: Int, _ n: UInt64) { base.storeBytes(of: counter(off) &+ n, toByteOffset: off, as: UInt64.self) }

    /// Adds to counters (takes the mutex; a failure to take it loses the increment, counted nowhere).
    func add(_ c: Counter, _ n: UInt64, also: Counter? = nil) {
        guard (try? lock()) != nil else { return }
        addCounter(c.rawValue, n)
        if let also { addCounter(also.rawValue, n) }
        unlock()
    }

    func sinkError(_ sink: String, lost: Int) {
        guard let slot = Self.sinkSlots.firstIndex(of: sink), (try? lock()) != nil else { return }
        addCounter(320 + 8 * slot, 1)
        addCounter(384 + 8 * slot, UInt64(max(lost, 0)))
        unlock()
    }

    /// Counts written records (call with the mutex held: the writer counts its batch while
    /// it holds it anyway). A label set beyond the table's bound counts as subtype `_other`.
    func countLocked(_ runs: [(MetricKey, UInt64)], written: UInt64) {
        addCounter(Counter.written.rawValue, written)
        for (key, n) in runs {
            guard let slot = slotLocked(key) else { continue }
            let off = Self.seriesOffset + slot * Self.seriesStride + 8
            base.storeBytes(of: base.load(fromByteOffset: off, as: UInt64.self) &+ n, toByteOffset: off, as: UInt64.self)
        }
    }

    private func entry(_ slot: Int) -> UnsafeMutableRawPointer { base + Self.seriesOffset + slot * Self.seriesStride }

    private static func fits(_ k: MetricKey) -> Bool {
        k.type.utf8.count <= 64 && k.subtype.utf8.count <= 64 && k.result.utf8.count <= 16
    }

    private func matches(_ e: UnsafeMutableRawPointer, _ t: [UInt8], _ s: [UInt8], _ r: [UInt8], _ sens: UInt8) -> Bool {
        guard e.load(as: UInt8.self) == UInt8(t.count), e.load(fromByteOffset: 1, as: UInt8.self) == UInt8(s.count),
              e.load(fromByteOffset: 2, as: UInt8.self) == UInt8(r.count), e.load(fromByteOffset: 3, as: UInt8.self) == sens else { return false }
        return memcmp(e + 16, t, t.count) == 0 && memcmp(e + 80, s, s.count) == 0 && memcmp(e + 144, r, r.count) == 0
    }

    private func slotLocked(_ key: MetricKey) -> Int? {
        var k = key
        if !Self.fits(k) { k.subtype = "_other" }
        guard Self.fits(k) else { return nil }
        let used = Int(min(base.load(fromByteOffset: 512, as: UInt64.self), UInt64(Self.seriesSlots)))
        let t = Array(k.type.utf8), r = Array(k.result.utf8)
        let sens: UInt8 = k.sensitive.map { $0 ? 2 : 1 } ?? 0
        for attempt in 0..<2 {
            let s = Array((attempt == 0 ? k.subtype : "_other").utf8)
            for i in 0..<used where matches(entry(i), t, s, r, sens) { return i }
            if used < (attempt == 0 ? AuditMetrics.maxSeries : Self.seriesSlots) {
                let e = entry(used)
                e.storeBytes(of: UInt8(t.count), as: UInt8.self)
                e.storeBytes(of: UInt8(s.count), toByteOffset: 1, as: UInt8.self)
                e.storeBytes(of: UInt8(r.count), toByteOffset: 2, as: UInt8.self)
                e.storeBytes(of: sens, toByteOffset: 3, as: UInt8.self)
                e.storeBytes(of: UInt64(0), toByteOffset: 8, as: UInt64.self)
                t.withUnsafeBytes { if let b = $0.baseAddress { _ = memcpy(e + 16, b, t.count) } }
                s.withUnsafeBytes { if let b = $0.baseAddress { _ = memcpy(e + 80, b, s.count) } }
                r.withUnsafeBytes { if let b = $0.baseAddress { _ = memcpy(e + 144, b, r.count) } }
                base.storeBytes(of: UInt64(used + 1), toByteOffset: 512, as: UInt64.self)
                return used
            }
        }
        return nil
    }

    /// The counters as `AuditMetrics` reports them.
    func snapshot() -> AuditMetrics.Snapshot {
        var s = AuditMetrics.Snapshot(dropped: 0, rejected: 0, written: 0, fsyncs: 0, sinkErrors: [:], sinkLost: [:], events: [])
        guard (try? lock()) != nil else { return s }
        defer { unlock() }
        s.written = counter(Counter.written.rawValue)
        s.dropped = counter(Counter.dropped.rawValue)
        s.rejected = counter(Counter.rejected.rawValue)
        s.fsyncs = counter(Counter.fsyncs.rawValue)
        for (k, name) in Self.sinkSlots.enumerated() {
            s.sinkErrors[name] = counter(320 + 8 * k)
            s.sinkLost[name] = counter(384 + 8 * k)
        }
        let used = Int(min(base.load(fromByteOffset: 512, as: UInt64.self), UInt64(Self.seriesSlots)))
        for i in 0..<used {
            let e = entry(i)
            func text(_ off: Int, _ lenAt: Int) -> String {
                let n = Int(e.load(fromByteOffset: lenAt, as: UInt8.self))
                return String(decoding: UnsafeRawBufferPointer(start: e + off, count: min(n, 64)), as: UTF8.self)
            }
            let sens = e.load(fromByteOffset: 3, as: UInt8.self)
            let key = MetricKey(type: text(16, 0), subtype: text(80, 1), result: text(144, 2), sensitive: sens == 0 ? nil : sens == 2)
            s.events.append((key, e.load(fromByteOffset: 8, as: UInt64.self)))
        }
        return s
    }
}
