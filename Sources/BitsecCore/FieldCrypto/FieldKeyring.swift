internal import COpenSSL

/// One immutable snapshot of the `fields` section: the keyring (ids, statuses, primary),
/// the deterministic-mode allow list, the size limit and the Fernet keys. A reload builds a
/// new snapshot and swaps it in atomically; operations in flight finish on the old one.
public final class FieldKeyring: Sendable {
    public let keys: [FieldKey]
    public let primary: FieldKey?
    /// Exact contexts, or prefixes when the entry ends with `*`.
    public let deterministicContexts: [String]
    private let deterministicExact: [[UInt8]]
    private let deterministicPrefixes: [[UInt8]]
    public let maxPlaintextBytes: Int
    public let fernet: FernetKeyring?

    init(keys: [FieldKey], primary: FieldKey?, deterministicContexts: [String], maxPlaintextBytes: Int, fernet: FernetKeyring?) {
        self.keys = keys
        self.primary = primary
        self.deterministicContexts = deterministicContexts
        self.deterministicExact = deterministicContexts.filter { !$0.hasSuffix("*") }.map { Array($0.utf8) }
        self.deterministicPrefixes = deterministicContexts.filter { $0.hasSuffix("*") }.map { Array($0.utf8.dropLast()) }
        self.maxPlaintextBytes = maxPlaintextBytes
        self.fernet = fernet
    }

    /// The key named by `id` (a linear scan: keyrings hold a handful of keys).
    @inline(__always)
    func key(id: UnsafeRawBufferPointer) -> FieldKey? {
        for k in keys where k.idBytes.count == id.count {
            let same = k.idBytes.withUnsafeBytes { a -> Bool in
                guard let x = a.baseAddress, let y = id.baseAddress else { return false }
                return memcmp(x, y, id.count) == 0
            }
            if same { return k }
        }
        return nil
    }

    public func key(id: String) -> FieldKey? { keys.first { $0.id == id } }

    func allowsDeterministic(_ context: UnsafeRawBufferPointer) -> Bool {
        let c = Array(context)
        if deterministicExact.contains(c) { return true }
        return deterministicPrefixes.contains { p in c.count >= p.count && Array(c.prefix(p.count)) == p }
    }

    func primaryKey() throws(BitsecError) -> FieldKey {
        guard let primary else { throw BitsecError(.notConfigured, "fields.keys is not configured") }
        return primary
    }

    // MARK: - Encryption

    /// The exact output size of `encrypt` for these arguments under the current primary.
    func encryptedLength(plaintext n: Int, flags: FieldFlags, key: FieldKey) -> Int {
        let bin = FieldFormat.binaryLength(plaintext: n, keyIdCount: key.idBytes.count, deterministic: flags.contains(.deterministic))
        return flags.contains(.binary) ? bin : FieldBase64.encodedLength(bin)
    }

    func checkArguments(plaintext: Int, context: Int, flags: FieldFlags) throws(BitsecError) {
        guard flags.isSubset(of: .all) else { throw .invalid("flags: unknown bits 0x\(String(flags.subtracting(.all).rawValue, radix: 16))") }
        guard plaintext <= maxPlaintextBytes else {
            throw .tooLarge("plaintext: \(plaintext) bytes exceeds the limit of \(maxPlaintextBytes) (fields.max_plaintext_bytes)")
        }
        guard context <= FieldFormat.maxContextBytes else {
            throw .tooLarge("context: \(context) bytes exceeds the limit of \(FieldFormat.maxContextBytes)")
        }
    }

    /// Encrypts under the primary key into `out`; returns the output size. When `out` is nil
    /// or too small nothing is written (the caller reports the size needed).
    func encrypt(_ plaintext: UnsafeRawBufferPointer, context: UnsafeRawBufferPointer, flags: FieldFlags,
                 into out: UnsafeMutableRawBufferPointer?) throws(BitsecError) -> Int {
        try checkArguments(plaintext: plaintext.count, context: context.count, flags: flags)
        let key = try primaryKey()
        let deterministic = flags.contains(.deterministic)
        if deterministic, !allowsDeterministic(context) {
            throw .invalid("deterministic mode is not enabled for this context (add it to fields.deterministic_contexts)")
        }
        let outLen = encryptedLength(plaintext: plaintext.count, flags: flags, key: key)
        guard let out, let dst = out.baseAddress, out.count >= outLen else { return outLen }
        clearOpenSSLErrors()
        if flags.contains(.binary) {
            try seal(key: key, plaintext, context: context, deterministic: deterministic, into: dst)
            return outLen
        }
        let binLen = FieldFormat.binaryLength(plaintext: plaintext.count, keyIdCount: key.idBytes.count, deterministic: deterministic)
        var failure: BitsecError? = nil
        withUnsafeTemporaryAllocation(byteCount: binLen, alignment: 16) { tmp in
            guard let t = tmp.baseAddress else { failure = .internalError("no temporary buffer"); return }
            do throws(BitsecError) {
                try seal(key: key, plaintext, context: context, deterministic: deterministic, into: t)
                FieldBase64.encode(UnsafeRawBufferPointer(tmp), into: out)
            } catch {
                failure = error
            }
        }
        if let failure { throw failure }
        return outLen
    }

    /// Writes a binary token (header, then the mode's body) at `dst`.
    private func seal(key: FieldKey, _ plaintext: UnsafeRawBufferPointer, context: UnsafeRawBufferPointer,
                      deterministic: Bool, into dst: UnsafeMutableRawPointer) throws(BitsecError) {
        let l = key.idBytes.count
        let headerLen = FieldFormat.headerLength(keyIdCount: l)
        dst.storeBytes(of: deterministic ? FieldFormat.versionSIV : FieldFormat.versionGCM, as: UInt8.self)
        dst.storeBytes(of: UInt8(truncatingIfNeeded: l), toByteOffset: 1, as: UInt8.self)
        key.idBytes.withUnsafeBytes { id in if let b = id.baseAddress { (dst + 2).copyMemory(from: b, byteCount: l) } }
        let header = UnsafeRawBufferPointer(start: dst, count: headerLen)
        try key.withWorker { (w) throws(BitsecError) in
            guard w.contextCheck(context, into: dst + 2 + l) else { throw OpenSSL.lastError("context check") }
            if deterministic {
                try key.sivSeal(aad1: header, aad2: context, plaintext: plaintext, out: dst + headerLen)
            } else {
                let nonce = dst + headerLen
                try w.nextNonce(into: nonce)
                guard w.seal(nonce: nonce, aad1: header, aad2: context, plaintext: plaintext, out: nonce + FieldFormat.nonceBytes) else {
                    throw OpenSSL.lastError("AES-256-GCM encrypt")
                }
            }
        }
    }

    // MARK: - Decryption

    /// What a token says about itself, for callers (audit, rewrap).
    public struct FieldTokenInfo: Sendable {
        public var keyId: String? = nil
        public var deterministic = false
        public init() {}
    }

    /// What a token says about itself, after structural checks.
    struct Parsed {
        var key: FieldKey
        var deterministic: Bool
        var headerLength: Int
        var plaintextLength: Int
    }

    /// Structural parse of a binary token: version, key id, lengths, key lookup and status.
    func parse(_ bin: UnsafeRawBufferPointer) -> Result<Parsed, FieldReason> {
        guard bin.count >= 2 else { return .failure(.malformed) }
        let version = bin[0]
        guard version == FieldFormat.versionGCM || version == FieldFormat.versionSIV else { return .failure(.malformed) }
        let l = Int(bin[1])
        guard l >= 1, l <= FieldFormat.maxKeyIdBytes else { return .failure(.malformed) }
        let headerLen = FieldFormat.headerLength(keyIdCount: l)
        let deterministic = version == FieldFormat.versionSIV
        let overhead = headerLen + (deterministic ? FieldFormat.tagBytes + 1 : FieldFormat.nonceBytes + FieldFormat.tagBytes)
        guard bin.count >= overhead else { return .failure(.malformed) }
        guard let key = key(id: UnsafeRawBufferPointer(rebasing: bin[2..<(2 + l)])) else { return .failure(.unknownKey) }
        guard key.status == .active else { return .failure(.retiredKey) }
        return .success(Parsed(key: key, deterministic: deterministic, headerLength: headerLen, plaintextLength: bin.count - overhead))
    }

    /// Largest token accepted by decrypt (text form of the largest plaintext).
    public static let maxTokenBytes = FieldBase64.encodedLength(
        FieldFormat.binaryLength(plaintext: FieldFormat.maxPlaintextBytes, keyIdCount: FieldFormat.maxKeyIdBytes, deterministic: false))

    /// Decrypts a token (text or binary form) into `out`. On failure nothing is left in `out`.
    /// When the outcome's length exceeds `out` (or `out` is nil) nothing was decrypted.
    /// `info` receives the token's key id when it could be read (for audit events) and its mode.
    func decrypt(_ token: UnsafeRawBufferPointer, context: UnsafeRawBufferPointer,
                 into out: UnsafeMutableRawBufferPointer?, info: inout FieldTokenInfo) throws(BitsecError) -> FieldOutcome {
        guard token.count <= Self.maxTokenBytes else {
            throw .tooLarge("token: \(token.count) bytes exceeds the limit of \(Self.maxTokenBytes)")
        }
        guard context.count <= FieldFormat.maxContextBytes else {
            throw .tooLarge("context: \(context.count) bytes exceeds the limit of \(FieldFormat.maxContextBytes)")
        }
        guard let first = token.first else { return .failed(.malformed) }
        if first == FieldFormat.versionGCM || first == FieldFormat.versionSIV {
            return try open(token, context: context, into: out, info: &info)
        }
        guard let binLen = FieldBase64.decodedLength(token.count) else { return .failed(.malformed) }
        var result: Result<FieldOutcome, BitsecError> = .success(.failed(.malformed))
        withUnsafeTemporaryAllocation(byteCount: max(binLen, 1), alignment: 16) { tmp in
            let bin = UnsafeMutableRawBufferPointer(rebasing: tmp[0..<binLen])
            guard FieldBase64.decode(token, into: bin) else { return }
            // A text token must decode to a binary one, not to another text token.
            guard let v = bin.first, v == FieldFormat.versionGCM || v == FieldFormat.versionSIV else { return }
            do throws(BitsecError) {
                result = .success(try open(UnsafeRawBufferPointer(bin), context: context, into: out, info: &info))
            } catch {
                result = .failure(error)
            }
        }
        return try result.get()
    }

    private func open(_ bin: UnsafeRawBufferPointer, context: UnsafeRawBufferPointer,
                      into out: UnsafeMutableRawBufferPointer?, info: inout FieldTokenInfo) throws(BitsecError) -> FieldOutcome {
        let p: Parsed
        switch parse(bin) {
        case .failure(let r):
            if r != .malformed, bin.count >= 2 {
                let l = Int(bin[1])
                if bin.count >= 2 + l { info.keyId = String(decoding: UnsafeRawBufferPointer(rebasing: bin[2..<(2 + l)]), as: UTF8.self) }
            }
            return .failed(r)
        case .success(let parsed): p = parsed
        }
        info.keyId = p.key.id
        info.deterministic = p.deterministic
        guard let out, let dst = out.baseAddress, out.count >= p.plaintextLength else {
            return FieldOutcome(.ok, p.plaintextLength)
        }
        guard let base = bin.baseAddress else { return .failed(.malformed) }
        clearOpenSSLErrors()
        let header = UnsafeRawBufferPointer(start: base, count: p.headerLength)
        let check = base + 2 + p.key.idBytes.count
        return try p.key.withWorker { (w) throws(BitsecError) -> FieldOutcome in
            let ok: Bool
            if p.deterministic {
                ok = p.key.sivOpen(aad1: header, aad2: context,
                                   body: UnsafeRawBufferPointer(rebasing: bin[p.headerLength...]), out: dst)
            } else {
                let nonce = base + p.headerLength
                let ct = UnsafeRawBufferPointer(start: nonce + FieldFormat.nonceBytes, count: p.plaintextLength)
                ok = w.open(nonce: nonce, aad1: header, aad2: context, ciphertext: ct,
                            tag: nonce + FieldFormat.nonceBytes + p.plaintextLength, out: dst)
            }
            if ok { return FieldOutcome(.ok, p.plaintextLength) }
            OPENSSL_cleanse(dst, p.plaintextLength)
            clearOpenSSLErrors()
            // Tell a token of another context from altered bytes with the context check.
            var mine: UInt32 = 0
            let computed = withUnsafeMutableBytes(of: &mine) { m -> Bool in
                guard let mp = m.baseAddress else { return false }
                return w.contextCheck(context, into: mp)
            }
            guard computed else { throw OpenSSL.lastError("context check") }
            let same = withUnsafeBytes(of: &mine) { m in CRYPTO_memcmp(m.baseAddress, check, FieldFormat.checkBytes) == 0 }
            return .failed(same ? .tampered : .wrongContext)
        }
    }
}
