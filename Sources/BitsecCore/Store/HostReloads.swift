internal import COpenSSL
internal import Synchronization
#if canImport(Glibc)
internal import Glibc
#endif

/// Counters that every process sharing a host region sees (the region's generation counters).
protocol GenerationCounters: AnyObject, Sendable {
    func generation(_ i: Int) -> UInt64
    func bumpGeneration(_ i: Int) -> UInt64
}

/// Reloads that reach every worker on the host.
///
/// A key, policy or field-key reload made through one process's runtime is published next to
/// the host region: the payload is written to `<directory>/bitsec-<name>.reload-<kind>` (mode
/// 0600, replaced atomically with `rename`), then the region's generation counter of that
/// kind is incremented, both under an exclusive `flock` on `bitsec-<name>.reload.lock` (released
/// by the kernel if the process dies). Every runtime using the region compares one counter
/// (generation 0: any reload) with the last it applied at the start of each call — one
/// atomic load from the shared page — and, when it moved, reads the newer payloads and applies
/// them exactly as the reloading process did. A worker started later (a restarted one)
/// applies the published reloads at its first call, so it never serves the keys of its
/// configuration file after the others moved on.
///
/// A payload carries the SHA-256 of the configuration document it was made under; a runtime
/// applies only payloads made under the same configuration. A service restarted with a new
/// configuration therefore starts from that configuration and ignores the reloads of the old
/// one that are still in the directory.
///
/// The payload is what the reload call received (a JWK Set, a policy, a `fields` section): a
/// `fields` section with inline secrets puts them in that file, readable by the service's
/// user only, in the region's directory (a tmpfs by default: never on disk).
final class HostReloads: Sendable {
    enum Kind: Int, CaseIterable, Sendable {
        case tokenKeys = 1, policy = 2, shadowPolicy = 3, fieldKeys = 4, csrfKeys = 5

        var fileSuffix: String {
            switch self {
            case .tokenKeys: return "token-keys"
            case .policy: return "policy"
            case .shadowPolicy: return "shadow-policy"
            case .fieldKeys: return "field-keys"
            case .csrfKeys: return "csrf-keys"
            }
        }
    }

    /// Generation 0 counts every reload; 1...4 count each kind.
    static let anyReload = 0
    static let magic = "bitsec-reload 1 "

    private let counters: any GenerationCounters
    private let base: String
    private let fingerprint: String
    /// The value of generation 0 when this runtime last caught up.
    private let seenAny = Atomic<UInt64>(0)
    private let seen = Mutex<[UInt64]>([UInt64](repeating: 0, count: Kind.allCases.count + 1))
    /// Reloads that failed in this process (a secret reference that does not resolve here).
    let failures = Atomic<UInt64>(0)

    /// - base: `<directory>/bitsec-<name>`.
    /// - config: the configuration document's bytes (its SHA-256 is the fingerprint).
    init(counters: any GenerationCounters, base: String, config: UnsafeRawBufferPointer) {
        self.counters = counters
        self.base = base
        var md = [UInt8](repeating: 0, count: 32)
        var n: UInt32 = 0
        _ = md.withUnsafeMutableBufferPointer { m in
            EVP_Digest(config.baseAddress, config.count, m.baseAddress, &n, EVP_sha256(), nil)
        }
        let hex = Array("0123456789abcdef".utf8)
        var s: [UInt8] = []
        for b in md { s.append(hex[Int(b >> 4)]); s.append(hex[Int(b & 15)]) }
        fingerprint = String(decoding: s, as: UTF8.self)
    }

    /// True when some process published a reload this runtime has not applied yet.
    @inline(__always)
    var behind: Bool { counters.generation(Self.anyReload) != seenAny.load(ordering: .acquiring) }

    /// Publishes a reload this process has just applied.
    func publish(_ kind: Kind, _ payload: UnsafeRawBufferPointer) throws(BitsecError) {
        try withLock { () throws(BitsecError) in
            let path = "\(base).reload-\(kind.fileSuffix)"
            let tmp = "\(path).\(getpid()).tmp"
            var bytes = Array("\(Self.magic)\(fingerprint)\n".utf8)
            bytes.append(contentsOf: payload)
            try writeFile(tmp, bytes)
            guard rename(tmp, path) == 0 else {
                let e = errno
                unlink(tmp)
                throw BitsecError(.io, "cannot publish the reload to \(path): \(String(cString: strerror(e)))")
            }
            let g = counters.bumpGeneration(kind.rawValue)
            _ = counters.bumpGeneration(Self.anyReload)
            // Our own reload is applied already.
            seen.withLock { $0[kind.rawValue] = max($0[kind.rawValue], g) }
        }
    }

    /// Applies the reloads published since this runtime last caught up, in the order token
    /// keys, policy, shadow policy, field keys. `apply` gets each payload; an error there
    /// (a reload that does not apply in this process) is counted and the payload is not
    /// retried until the next reload of that kind.
    @inline(never)
    func catchUp(_ apply: (Kind, [UInt8]) throws(BitsecError) -> Void) {
        let any = counters.generation(Self.anyReload)
        for kind in Kind.allCases {
            let g = counters.generation(kind.rawValue)
            let due = seen.withLock { s -> Bool in
                guard s[kind.rawValue] != g else { return false }
                s[kind.rawValue] = g
                return true
            }
            guard due else { continue }
            guard let payload = read(kind) else { continue }
            do {
                try apply(kind, Array(payload))
            } catch {
                failures.add(1, ordering: .relaxed)
            }
        }
        seenAny.store(any, ordering: .releasing)
    }

    /// The payload of a kind, if it was made under this configuration.
    private func read(_ kind: Kind) -> ArraySlice<UInt8>? {
        guard let bytes = try? readFile("\(base).reload-\(kind.fileSuffix)", limit: Limits.maxConfigBytes + 256) else { return nil }
        let head = Array("\(Self.magic)\(fingerprint)\n".utf8)
        guard bytes.count >= head.count, bytes[0..<head.count].elementsEqual(head) else { return nil }
        return bytes[head.count...]
    }

    private func withLock<R>(_ body: () throws(BitsecError) -> R) throws(BitsecError) -> R {
        let path = "\(base).reload.lock"
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else { throw BitsecError(.io, "cannot open \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        while flock(fd, LOCK_EX) != 0 {
            guard errno == EINTR else { throw BitsecError(.io, "cannot lock \(path): \(String(cString: strerror(errno)))") }
        }
        return try body()
    }

    private func writeFile(_ path: String, _ bytes: [UInt8]) throws(BitsecError) {
        unlink(path)
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard fd >= 0 else { throw BitsecError(.io, "cannot create \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var off = 0
        while off < bytes.count {
            let n = bytes.withUnsafeBytes { (b: UnsafeRawBufferPointer) -> Int in
                guard let base = b.baseAddress else { return 0 }
                return write(fd, base + off, b.count - off)
            }
            if n == 0 { break }
            if n < 0 {
                if errno == EINTR { continue }
                let e = errno
                unlink(path)
                throw BitsecError(.io, "cannot write \(path): \(String(cString: strerror(e)))")
            }
            off += n
        }
    }
}
