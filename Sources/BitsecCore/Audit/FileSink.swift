internal import Glibc

/// The file sink: append-only JSON Lines, mode 0600, rotation by size and/or time, and the
/// source of the chain's continuation after a restart. Only the writer thread touches it.
///
/// Rotation happens between records: the current file is synced, renamed to
/// `<path>.<last seq, 16 digits>` (so rotated files sort in chain order) and a new file is
/// created; the directory is synced so the rename survives a crash. One thread writes every
/// record exactly once, so rotation neither loses nor duplicates anything.
final class FileSink {
    let path: String
    let rotateBytes: Int64
    let rotateSeconds: Int64
    /// Several processes append to this file (`SharedAuditHead` serialises them).
    let shared: Bool
    private var fd: Int32 = -1
    private(set) var size: Int64 = 0
    private var openedAt: Int64 = 0
    /// The last sequence number written to the current file (0 when empty).
    private(set) var lastSeqInFile: UInt64 = 0
    /// The last sequence number written to any file (the current one or a rotated one). A
    /// batch that failed part-way is retried whole: the records up to here are already in a
    /// file and are skipped, not written twice.
    private var writtenThrough: UInt64 = 0
    private(set) var unsynced = false
    /// Wall-clock creation time of the current file (shared files rotate by time with it).
    private(set) var createdAt: Int64 = 0

    /// What was found at startup.
    struct Recovery {
        var lastSeq: UInt64 = 0
        var lastHash: [UInt8] = ChainHasher.genesis
        var truncatedBytes: Int64 = 0
        var from: String? = nil
    }

    init(_ c: AuditConfig.FileSink) {
        path = c.path
        rotateBytes = c.rotateBytes
        rotateSeconds = c.rotateSeconds
        shared = c.shared
    }

    deinit { if fd >= 0 { Glibc.close(fd) } }

    private static func errnoText() -> String { String(cString: strerror(errno)) }

    /// Opens (creating with 0600) and recovers the chain's last seq and hash. A shared file
    /// is only opened here: its recovery runs under the shared lock (`recover`).
    func open(hasher: ChainHasher) throws(BitsecError) -> Recovery {
        let f = Glibc.open(path, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
        guard f >= 0 else { throw .config("audit file sink: cannot open \(path): \(Self.errnoText())") }
        fd = f
        // One writer per file unless shared: a second runtime (in this process or another)
        // appending its own chain to the same file would fork the chain. Shared runtimes hold
        // a shared flock, so a file is either shared by all its runtimes or owned by one.
        guard flock(f, (shared ? LOCK_SH : LOCK_EX) | LOCK_NB) == 0 else {
            if shared {
                throw .config("audit file sink: \(path) is in use by a runtime that does not share it; set \"shared\": true on the file sink of every runtime writing it")
            }
            throw .config("audit file sink: \(path) is in use by another runtime (a file has one writer); for several processes or runtimes on one trail set \"shared\": true on the file sink")
        }
        if shared {
            var st = stat()
            guard fstat(f, &st) == 0 else { throw .config("audit file sink: cannot stat \(path): \(Self.errnoText())") }
            guard (st.st_mode & S_IFMT) == S_IFREG else { throw .config("audit file sink: \(path) is not a regular file") }
            if st.st_mode & 0o777 != 0o600 { _ = fchmod(f, 0o600) }
            return Recovery()
        }
        return try recover(hasher: hasher)
    }

    /// Reads back the chain's last record (cutting a torn tail) from the current file, or
    /// from the newest rotated one when the current file is empty.
    func recover(hasher: ChainHasher) throws(BitsecError) -> Recovery {
        let f = fd
        lastSeqInFile = 0
        var st = stat()
        guard fstat(f, &st) == 0 else { throw .config("audit file sink: cannot stat \(path): \(Self.errnoText())") }
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw .config("audit file sink: \(path) is not a regular file") }
        // Audit trails are private: tighten a file created by someone else with a looser mode.
        if st.st_mode & 0o777 != 0o600 { _ = fchmod(f, 0o600) }
        openedAt = Clock.monotonicMillis()
        createdAt = Clock.nowSeconds()
        size = Int64(st.st_size)
        var rec = Recovery()
        if size > 0 {
            let (last, torn) = try Self.lastLine(fd: f, size: size, path: path)
            if torn > 0 {
                guard ftruncate(f, off_t(size - torn)) == 0 else {
                    throw .config("audit file sink: cannot truncate the torn last record of \(path): \(Self.errnoText())")
                }
                size -= torn
                rec.truncatedBytes = torn
            }
            if let last {
                let r = try Self.check(last, path: path, hasher: hasher)
                rec.lastSeq = r.seq
                rec.lastHash = r.hash
                rec.from = path
                lastSeqInFile = r.seq
            }
        }
        if rec.from == nil, let rotated = newestRotated() {
            // A crash between rotation and the first record of the new file: continue the
            // chain from the newest rotated file.
            let rf = Glibc.open(rotated, O_RDONLY | O_CLOEXEC)
            if rf >= 0 {
                defer { Glibc.close(rf) }
                var rst = stat()
                if fstat(rf, &rst) == 0, rst.st_size > 0,
                   case let (last?, _) = try Self.lastLine(fd: rf, size: Int64(rst.st_size), path: rotated) {
                    let r = try Self.check(last, path: rotated, hasher: hasher)
                    rec.lastSeq = r.seq
                    rec.lastHash = r.hash
                    rec.from = rotated
                }
            }
        }
        writtenThrough = rec.lastSeq
        return rec
    }

    private static func check(_ line: [UInt8], path: String, hasher: ChainHasher) throws(BitsecError) -> (seq: UInt64, hash: [UInt8]) {
        let (p, why) = AuditRecord.parse(line[...])
        guard let p else { throw .config("audit file sink: the last record of \(path) is unreadable (\(why)); run 'bitsec audit verify'") }
        let h = try hasher.chain(prev: p.prev, canonical: p.canonical)
        guard OpenSSL.constantTimeEqual(h, p.hash) else {
            throw .config("audit file sink: the last record of \(path) (seq \(p.seq)) fails its hash check (edited, or another hmac_key); run 'bitsec audit verify'")
        }
        return (p.seq, p.hash)
    }

    /// The last complete line of a file and the length of a torn (unterminated) tail.
    private static func lastLine(fd: Int32, size: Int64, path: String) throws(BitsecError) -> ([UInt8]?, Int64) {
        let want = Int(min(size, Int64(AuditRecord.maxRecordBytes + 8192) * 2))
        var buf = [UInt8](repeating: 0, count: want)
        var got = 0
        while got < want {
            let n = buf.withUnsafeMutableBytes { p -> Int in
                guard let base = p.baseAddress else { return -1 }
                return pread(fd, base + got, want - got, off_t(size - Int64(want) + Int64(got)))
            }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw .config("audit file sink: cannot read \(path): \(errnoText())") }
            got += n
        }
        var end = buf.count
        var torn: Int64 = 0
        if buf.last != 0x0A {
            guard let nl = buf.lastIndex(of: 0x0A) else {
                if Int64(want) == size { return (nil, size) }
                throw .config("audit file sink: \(path) does not end with a complete record")
            }
            torn = Int64(buf.count - nl - 1)
            end = nl + 1
        }
        // end points just past the final newline.
        let lineEnd = end - 1
        let start = buf[0..<lineEnd].lastIndex(of: 0x0A).map { $0 + 1 } ?? 0
        if start == 0 && Int64(want) < size { throw .config("audit file sink: the last record of \(path) is too long") }
        return (Array(buf[start..<lineEnd]), torn)
    }

    /// The rotated file with the highest sequence, if any.
    func newestRotated() -> String? {
        let (dir, base) = splitPath(path)
        guard let d = opendir(dir) else { return nil }
        defer { closedir(d) }
        var best: String? = nil
        let prefix = base + "."
        while let e = readdir(d) {
            let name = withUnsafeBytes(of: e.pointee.d_name) { raw in String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self) }
            guard name.hasPrefix(prefix) else { continue }
            let tail = name.dropFirst(prefix.count)
            guard tail.utf8.count == 16, tail.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else { continue }
            if let b = best, b >= name { continue }
            best = name
        }
        return best.map { dir == "." && !path.hasPrefix("./") ? $0 : dir + "/" + $0 }
    }

    // MARK: - Shared files (every call with the shared lock held)

    /// The identity of the open file.
    func identity() -> (dev: UInt64, ino: UInt64, size: Int64)? {
        var st = stat()
        guard fd >= 0, fstat(fd, &st) == 0 else { return nil }
        return (UInt64(st.st_dev), UInt64(st.st_ino), Int64(st.st_size))
    }

    /// Makes this process's view match the head: reopens the path when another process
    /// rotated the file, and cuts bytes past the committed length (a writer died mid-batch;
    /// nothing there was acknowledged). Returns the bytes cut, or nil when the head does not
    /// describe the file at `path` (the caller rebuilds it with `recover`).
    func adopt(_ h: SharedAuditHead.Head) throws(BitsecError) -> Int64? {
        var pst = stat()
        guard stat(path, &pst) == 0 else {
            if errno == ENOENT { return nil }
            throw .init(.io, "audit file \(path): cannot stat: \(Self.errnoText())")
        }
        if UInt64(pst.st_dev) != h.dev || UInt64(pst.st_ino) != h.ino { return nil }
        if let id = identity(), id.dev != h.dev || id.ino != h.ino {
            try reopenPath()
        }
        guard let id = identity() else { throw .init(.io, "audit file \(path): cannot stat the open file") }
        if id.size < h.committed { return nil }
        var cut: Int64 = 0
        if id.size > h.committed {
            guard ftruncate(fd, off_t(h.committed)) == 0 else {
                throw .init(.io, "audit file \(path): cannot cut an unacknowledged torn tail: \(Self.errnoText())")
            }
            cut = id.size - h.committed
        }
        size = h.committed
        lastSeqInFile = h.committed > 0 ? h.lastSeq : 0
        writtenThrough = h.lastSeq
        createdAt = h.createdAt
        return cut
    }

    /// Reopens `path` (created when missing) in place of the open descriptor.
    func reopenPath() throws(BitsecError) {
        let f = Glibc.open(path, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
        guard f >= 0 else { throw .init(.io, "audit file \(path): cannot reopen: \(Self.errnoText())") }
        _ = flock(f, LOCK_SH | LOCK_NB)
        if fd >= 0 { Glibc.close(fd) }
        fd = f
    }

    /// The head describing the file after a batch.
    func head(lastSeq: UInt64, lastHash: [UInt8]) -> SharedAuditHead.Head {
        let id = identity()
        return SharedAuditHead.Head(lastSeq: lastSeq, committed: size, dev: id?.dev ?? 0, ino: id?.ino ?? 0,
                                    createdAt: createdAt, lastHash: lastHash)
    }

    /// Writes a shared batch, rotating between records when due, as `write` does. Returns
    /// how many records (a prefix) are in a file, and the error that stopped the rest: the
    /// caller moves the head past the written prefix (those records are committed, in the
    /// current or a rotated file) and chains the rest again later. A failed chunk is cut
    /// back to its last whole record.
    func writeShared(_ records: [OutRecord]) -> (written: Int, error: BitsecError?) {
        var chunk: [UInt8] = []
        chunk.reserveCapacity(min(records.reduce(0) { $0 + $1.line.count }, 8 << 20))
        var chunkLast: UInt64 = 0
        var written = 0
        for (i, r) in records.enumerated() {
            if size > 0 || !chunk.isEmpty {
                let projected = size + Int64(chunk.count) + Int64(r.line.count)
                let bySize = rotateBytes > 0 && projected > rotateBytes
                let byTime = rotateSeconds > 0 && Clock.nowSeconds() - createdAt >= rotateSeconds
                if bySize || byTime {
                    do { try flushChunk(&chunk, last: chunkLast) } catch { return (written, error) }
                    written = i
                    do { try rotate() } catch { return (written, error) }
                }
            }
            chunk.append(contentsOf: r.line)
            chunkLast = r.seq
            if chunk.count >= 4 << 20 {
                do { try flushChunk(&chunk, last: chunkLast) } catch { return (written, error) }
                written = i + 1
            }
        }
        do { try flushChunk(&chunk, last: chunkLast) } catch { return (written, error) }
        return (records.count, nil)
    }

    /// Appends records; rotates between records when due. On a failed write the file is cut
    /// back to the last whole record and the error is thrown: the caller retries the batch,
    /// and the records of the batch that were written before the failure (a batch is written
    /// in chunks of 4 MiB and split by rotation) are skipped then.
    func write(_ records: [(seq: UInt64, line: [UInt8])]) throws(BitsecError) {
        var chunk: [UInt8] = []
        chunk.reserveCapacity(min(records.reduce(0) { $0 + $1.line.count }, 8 << 20))
        var chunkLast: UInt64 = 0
        for r in records where r.seq > writtenThrough {
            if lastSeqInFile != 0 || !chunk.isEmpty {
                let projected = size + Int64(chunk.count) + Int64(r.line.count)
                let bySize = rotateBytes > 0 && projected > rotateBytes
                let byTime = rotateSeconds > 0 && Clock.monotonicMillis() - openedAt >= rotateSeconds * 1000
                if bySize || byTime {
                    try flushChunk(&chunk, last: chunkLast)
                    try rotate()
                }
            }
            chunk.append(contentsOf: r.line)
            chunkLast = r.seq
            if chunk.count >= 4 << 20 { try flushChunk(&chunk, last: chunkLast) }
        }
        try flushChunk(&chunk, last: chunkLast)
    }

    private func flushChunk(_ chunk: inout [UInt8], last: UInt64) throws(BitsecError) {
        guard !chunk.isEmpty else { return }
        let before = size
        var off = 0
        while off < chunk.count {
            let n = chunk.withUnsafeBytes { p -> Int in
                guard let base = p.baseAddress else { return -1 }
                return Glibc.write(fd, base + off, p.count - off)
            }
            if n < 0 {
                if errno == EINTR { continue }
                let why = Self.errnoText()
                if off > 0 { _ = ftruncate(fd, off_t(before)) }
                throw .init(.io, "audit file \(path): write failed: \(why)")
            }
            off += n
        }
        size += Int64(chunk.count)
        lastSeqInFile = last
        writtenThrough = last
        unsynced = true
        chunk.removeAll(keepingCapacity: true)
    }

    func sync() throws(BitsecError) {
        guard unsynced, fd >= 0 else { return }
        guard fdatasync(fd) == 0 else { throw .init(.io, "audit file \(path): fdatasync failed: \(Self.errnoText())") }
        unsynced = false
    }

    private func rotate() throws(BitsecError) {
        // A shared file holds other processes' records too, which this one never synced.
        if shared { unsynced = true }
        try sync()
        var digits = String(lastSeqInFile)
        while digits.utf8.count < 16 { digits = "0" + digits }
        let target = path + "." + digits
        guard rename(path, target) == 0 else { throw .init(.io, "audit file \(path): rotation rename failed: \(Self.errnoText())") }
        let f = Glibc.open(path, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC | O_EXCL, 0o600)
        guard f >= 0 else { throw .init(.io, "audit file \(path): cannot create after rotation: \(Self.errnoText())") }
        _ = flock(f, (shared ? LOCK_SH : LOCK_EX) | LOCK_NB)
        Glibc.close(fd)
        fd = f
        size = 0
        lastSeqInFile = 0
        openedAt = Clock.monotonicMillis()
        createdAt = Clock.nowSeconds()
        let (dir, _) = splitPath(path)
        let dfd = Glibc.open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dfd >= 0 { _ = fsync(dfd); Glibc.close(dfd) }
    }

    func close() {
        if fd >= 0 { _ = fdatasync(fd); Glibc.close(fd); fd = -1 }
    }
}

func splitPath(_ p: String) -> (dir: String, base: String) {
    let u = Array(p.utf8)
    guard let slash = u.lastIndex(of: 0x2F) else { return (".", p) }
    let dir = slash == 0 ? "/" : String(decoding: u[0..<slash], as: UTF8.self)
    return (dir, String(decoding: u[(slash + 1)...], as: UTF8.self))
}
