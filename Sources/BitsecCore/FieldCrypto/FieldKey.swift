internal import COpenSSL
internal import Synchronization
internal import Glibc

/// OpenSSL objects fetched once per process (EVP_CIPHER_fetch / EVP_MAC_fetch are costly
/// and thread-safe; the fetched objects are immutable and shared).
enum FieldAlgorithms {
    nonisolated(unsafe) static let gcm: OpaquePointer? = EVP_CIPHER_fetch(nil, "AES-256-GCM", nil)
    nonisolated(unsafe) static let siv: OpaquePointer? = EVP_CIPHER_fetch(nil, "AES-256-SIV", nil)
    nonisolated(unsafe) static let ecb: OpaquePointer? = EVP_CIPHER_fetch(nil, "AES-256-ECB", nil)
    nonisolated(unsafe) static let sha256: OpaquePointer? = EVP_MD_fetch(nil, "SHA256", nil)
}

/// Clears OpenSSL's error queue before an operation. In OpenSSL 3.0 ERR_clear_error walks and
/// frees all 16 slots of the thread's queue on every call (~10% of a field decryption), so the
/// queue is first peeked: clearing an empty queue changes nothing.
@inline(__always)
func clearOpenSSLErrors() {
    if ERR_peek_error() != 0 { ERR_clear_error() }
}

/// Bumped in the child after fork(): buffered nonces of the parent must never be used by
/// the child too (a repeated GCM nonce under one key is catastrophic).
let fieldForkGeneration = Atomic<Int>(0)
private let fieldAtforkRegistered: Bool = {
    pthread_atfork(nil, nil, { fieldForkGeneration.add(1, ordering: .relaxed) })
    return true
}()

/// The per-operation OpenSSL state of one key: a GCM context keyed for encryption, one keyed
/// for decryption, an AES-256-ECB context and a SHA-256 context for the context check, and a
/// buffer of nonces drawn from RAND_bytes in batches. Each operation only resets the nonce
/// (EVP_*Init_ex2 with a NULL key keeps the key schedule), so no key schedule and no
/// allocation happen per call. A worker is used by one thread at a time (the key's pool).
///
/// Why batches: OpenSSL 3.0's RAND_bytes costs about 2 µs per call whatever the size (CTR-DRBG
/// update and locking), more than the whole AEAD; one call per 64 nonces keeps the nonces
/// just as random. The buffer is discarded after fork() and when the worker is freed.
///
/// The context check is AES-256-ECB(check subkey, SHA-256(context)[0..<16])[0..<4]: a PRF of
/// the context (a collision-resistant hash, then a block cipher), at a third of the cost of
/// an EVP HMAC.
final class FieldWorker: @unchecked Sendable {
    let enc: OpaquePointer
    let dec: OpaquePointer
    let ecb: OpaquePointer
    let md: OpaquePointer
    private static let nonceBatch = 64 * FieldFormat.nonceBytes
    private let nonces = UnsafeMutableRawBufferPointer.allocate(byteCount: FieldWorker.nonceBatch, alignment: 16)
    private var nonceOffset = FieldWorker.nonceBatch
    private var nonceGeneration = -1

    init(aeadKey: SecretBytes, checkKey: SecretBytes) throws(BitsecError) {
        _ = fieldAtforkRegistered
        ERR_clear_error()
        guard let gcm = FieldAlgorithms.gcm, let aesECB = FieldAlgorithms.ecb, let sha = FieldAlgorithms.sha256 else {
            nonces.deallocate()
            throw OpenSSL.lastError("EVP_CIPHER_fetch(AES-256-GCM/AES-256-ECB)/EVP_MD_fetch(SHA256)")
        }
        let e = EVP_CIPHER_CTX_new(), d = EVP_CIPHER_CTX_new(), x = EVP_CIPHER_CTX_new(), m = EVP_MD_CTX_new()
        guard let e, let d, let x, let m else {
            EVP_CIPHER_CTX_free(e); EVP_CIPHER_CTX_free(d); EVP_CIPHER_CTX_free(x); EVP_MD_CTX_free(m)
            nonces.deallocate()
            throw OpenSSL.lastError("EVP_CIPHER_CTX_new")
        }
        enc = e; dec = d; ecb = x; md = m
        let keyed: Bool = aeadKey.withBytes { k in
            let p = k.baseAddress?.assumingMemoryBound(to: UInt8.self)
            return EVP_EncryptInit_ex2(e, gcm, p, nil, nil) == 1 && EVP_DecryptInit_ex2(d, gcm, p, nil, nil) == 1
        }
        guard keyed else { throw OpenSSL.lastError("EVP_EncryptInit_ex2(AES-256-GCM)") }
        let checkKeyed: Bool = checkKey.withBytes { k in
            EVP_EncryptInit_ex2(x, aesECB, k.baseAddress?.assumingMemoryBound(to: UInt8.self), nil, nil) == 1
                && EVP_CIPHER_CTX_set_padding(x, 0) == 1
        }
        guard checkKeyed, EVP_DigestInit_ex2(m, sha, nil) == 1 else { throw OpenSSL.lastError("context check init") }
    }

    deinit {
        // EVP_CIPHER_CTX_free cleanses the key schedules it holds.
        EVP_CIPHER_CTX_free(enc)
        EVP_CIPHER_CTX_free(dec)
        EVP_CIPHER_CTX_free(ecb)
        EVP_MD_CTX_free(md)
        OPENSSL_cleanse(nonces.baseAddress, nonces.count)
        nonces.deallocate()
    }

    /// Writes a fresh random nonce at `out`.
    @inline(__always)
    func nextNonce(into out: UnsafeMutableRawPointer) throws(BitsecError) {
        let gen = fieldForkGeneration.load(ordering: .relaxed)
        if nonceOffset + FieldFormat.nonceBytes > nonces.count || gen != nonceGeneration {
            try OpenSSL.randomBytes(nonces)
            nonceOffset = 0
            nonceGeneration = gen
        }
        guard let base = nonces.baseAddress else { throw .internalError("nonce buffer") }
        out.copyMemory(from: base + nonceOffset, byteCount: FieldFormat.nonceBytes)
        // Consumed: never handed out twice.
        (base + nonceOffset).initializeMemory(as: UInt8.self, repeating: 0, count: FieldFormat.nonceBytes)
        nonceOffset += FieldFormat.nonceBytes
    }

    /// The 4-byte context check into `out`.
    @inline(__always)
    func contextCheck(_ context: UnsafeRawBufferPointer, into out: UnsafeMutableRawPointer) -> Bool {
        var digest = (UInt64(0), UInt64(0), UInt64(0), UInt64(0))
        var block = (UInt64(0), UInt64(0))
        let ok = withUnsafeMutableBytes(of: &digest) { dg -> Bool in
            withUnsafeMutableBytes(of: &block) { bl -> Bool in
                guard let dp = dg.baseAddress?.assumingMemoryBound(to: UInt8.self),
                      let bp = bl.baseAddress?.assumingMemoryBound(to: UInt8.self) else { return false }
                var dl: UInt32 = 0
                guard EVP_DigestInit_ex2(md, nil, nil) == 1 else { return false }
                if context.count > 0, EVP_DigestUpdate(md, context.baseAddress, context.count) != 1 { return false }
                guard EVP_DigestFinal_ex(md, dp, &dl) == 1, dl == 32 else { return false }
                var n: Int32 = 0
                guard EVP_EncryptUpdate(ecb, bp, &n, dp, 16) == 1, n == 16 else { return false }
                out.copyMemory(from: bp, byteCount: FieldFormat.checkBytes)
                return true
            }
        }
        return ok
    }

    /// AES-256-GCM seal: `out` receives ciphertext (plaintext.count bytes) then the 16-byte tag.
    @inline(__always)
    func seal(nonce: UnsafeRawPointer, aad1: UnsafeRawBufferPointer, aad2: UnsafeRawBufferPointer,
              plaintext: UnsafeRawBufferPointer, out: UnsafeMutableRawPointer) -> Bool {
        var n: Int32 = 0
        guard EVP_EncryptInit_ex2(enc, nil, nil, nonce.assumingMemoryBound(to: UInt8.self), nil) == 1 else { return false }
        guard EVP_EncryptUpdate(enc, nil, &n, aad1.baseAddress?.assumingMemoryBound(to: UInt8.self), Int32(aad1.count)) == 1 else { return false }
        if aad2.count > 0 {
            guard EVP_EncryptUpdate(enc, nil, &n, aad2.baseAddress?.assumingMemoryBound(to: UInt8.self), Int32(aad2.count)) == 1 else { return false }
        }
        let o = out.assumingMemoryBound(to: UInt8.self)
        var written = 0
        if plaintext.count > 0 {
            guard EVP_EncryptUpdate(enc, o, &n, plaintext.baseAddress?.assumingMemoryBound(to: UInt8.self), Int32(plaintext.count)) == 1 else { return false }
            written = Int(n)
        }
        guard EVP_EncryptFinal_ex(enc, o + written, &n) == 1 else { return false }
        written += Int(n)
        guard written == plaintext.count else { return false }
        return EVP_CIPHER_CTX_ctrl(enc, bitsec_evp_ctrl_gcm_get_tag(), Int32(FieldFormat.tagBytes), UnsafeMutableRawPointer(o + written)) == 1
    }

    /// AES-256-GCM open into `out` (ciphertext.count bytes). False when the tag does not
    /// verify; the caller wipes `out` then.
    @inline(__always)
    func open(nonce: UnsafeRawPointer, aad1: UnsafeRawBufferPointer, aad2: UnsafeRawBufferPointer,
              ciphertext: UnsafeRawBufferPointer, tag: UnsafeRawPointer, out: UnsafeMutableRawPointer) -> Bool {
        var n: Int32 = 0
        guard EVP_DecryptInit_ex2(dec, nil, nil, nonce.assumingMemoryBound(to: UInt8.self), nil) == 1 else { return false }
        guard EVP_DecryptUpdate(dec, nil, &n, aad1.baseAddress?.assumingMemoryBound(to: UInt8.self), Int32(aad1.count)) == 1 else { return false }
        if aad2.count > 0 {
            guard EVP_DecryptUpdate(dec, nil, &n, aad2.baseAddress?.assumingMemoryBound(to: UInt8.self), Int32(aad2.count)) == 1 else { return false }
        }
        let o = out.assumingMemoryBound(to: UInt8.self)
        var written = 0
        if ciphertext.count > 0 {
            guard EVP_DecryptUpdate(dec, o, &n, ciphertext.baseAddress?.assumingMemoryBound(to: UInt8.self), Int32(ciphertext.count)) == 1 else { return false }
            written = Int(n)
        }
        guard EVP_CIPHER_CTX_ctrl(dec, bitsec_evp_ctrl_gcm_set_tag(), Int32(FieldFormat.tagBytes), UnsafeMutableRawPointer(mutating: tag)) == 1 else { return false }
        guard EVP_DecryptFinal_ex(dec, o + written, &n) == 1 else { return false }
        return written + Int(n) == ciphertext.count
    }
}

/// One key of the field keyring: its id, status and purpose subkeys (wiped on release), and a
/// small pool of workers so concurrent callers never share OpenSSL contexts.
public final class FieldKey: @unchecked Sendable {
    public enum Status: String, Sendable { case active, retired }
    public enum Origin: Sendable { case secret(String), master }

    public let id: String
    let idBytes: [UInt8]
    public let status: Status
    public let origin: Origin
    let aeadKey: SecretBytes
    let sivKey: SecretBytes
    let checkKey: SecretBytes
    private let pool = Mutex<[FieldWorker]>([])
    private static let maxPooled = 64

    /// Builds the key from its material (at least 32 bytes): the subkeys are derived with HKDF.
    public init(id: String, material: SecretBytes, status: Status, origin: Origin) throws(BitsecError) {
        self.id = id
        self.idBytes = Array(id.utf8)
        self.status = status
        self.origin = origin
        aeadKey = try FieldKDF.subkey(material, purpose: "aead", keyId: id, length: 32)
        sivKey = try FieldKDF.subkey(material, purpose: "siv", keyId: id, length: 64)
        checkKey = try FieldKDF.subkey(material, purpose: "context-check", keyId: id, length: 32)
        // One worker up front: a key that OpenSSL refuses fails at configuration time.
        let w = try FieldWorker(aeadKey: aeadKey, checkKey: checkKey)
        pool.withLock { $0.append(w) }
    }

    /// Runs `body` with a worker of this key's pool (created when all are busy).
    @inline(__always)
    func withWorker<R>(_ body: (FieldWorker) throws(BitsecError) -> R) throws(BitsecError) -> R {
        let pooled = pool.withLock { $0.popLast() }
        let w: FieldWorker
        if let pooled { w = pooled } else { w = try FieldWorker(aeadKey: aeadKey, checkKey: checkKey) }
        defer {
            pool.withLock { if $0.count < Self.maxPooled { $0.append(w) } }
        }
        return try body(w)
    }

    /// AES-256-SIV (deterministic): a fresh context per call, since OpenSSL 3.0's SIV cannot
    /// be re-used without re-keying. `out` receives SIV (16) || ciphertext (plaintext.count + 1).
    func sivSeal(aad1: UnsafeRawBufferPointer, aad2: UnsafeRawBufferPointer, plaintext: UnsafeRawBufferPointer,
                 out: UnsafeMutableRawPointer) throws(BitsecError) {
        clearOpenSSLErrors()
        guard let siv = FieldAlgorithms.siv, let ctx = EVP_CIPHER_CTX_new() else { throw OpenSSL.lastError("AES-256-SIV") }
        defer { EVP_CIPHER_CTX_free(ctx) }
        let total = plaintext.count + 1
        // 0x00 || plaintext, in a temporary buffer wiped afterwards.
        let ok: Bool = withUnsafeTemporaryAllocation(byteCount: total, alignment: 16) { tmp -> Bool in
            defer { OPENSSL_cleanse(tmp.baseAddress, tmp.count) }
            tmp[0] = 0
            if plaintext.count > 0, let src = plaintext.baseAddress, let dst = tmp.baseAddress {
                (dst + 1).copyMemory(from: src, byteCount: plaintext.count)
            }
            var n: Int32 = 0
            let keyed = sivKey.withBytes { k in EVP_EncryptInit_ex2(ctx, siv, k.baseAddress?.assumingMemoryBound(to: UInt8.self), nil, nil) == 1 }
            guard keyed else { return false }
            guard EVP_EncryptUpdate(ctx, nil, &n, aad1.baseAddress?.assumingMemoryBound(to: UInt8.self), Int32(aad1.count)) == 1 else { return false }
            guard EVP_EncryptUpdate(ctx, nil, &n, aad2.baseAddress?.assumingMemoryBound(to: UInt8.self), Int32(aad2.count)) == 1 else { return false }
            let ct = (out + FieldFormat.tagBytes).assumingMemoryBound(to: UInt8.self)
            guard EVP_EncryptUpdate(ctx, ct, &n, tmp.baseAddress?.assumingMemoryBound(to: UInt8.self), Int32(total)) == 1, Int(n) == total else { return false }
            var f: Int32 = 0
            guard EVP_EncryptFinal_ex(ctx, ct + total, &f) == 1 else { return false }
            return EVP_CIPHER_CTX_ctrl(ctx, bitsec_evp_ctrl_gcm_get_tag(), Int32(FieldFormat.tagBytes), out) == 1
        }
        guard ok else { throw OpenSSL.lastError("AES-256-SIV encrypt") }
    }

    /// AES-256-SIV open: `body` is SIV || ciphertext; `out` receives the plaintext
    /// (ciphertext.count - 1 bytes). False when the SIV does not verify.
    func sivOpen(aad1: UnsafeRawBufferPointer, aad2: UnsafeRawBufferPointer, body: UnsafeRawBufferPointer,
                 out: UnsafeMutableRawPointer) -> Bool {
        clearOpenSSLErrors()
        guard let siv = FieldAlgorithms.siv, let ctx = EVP_CIPHER_CTX_new(), let base = body.baseAddress else { return false }
        defer { EVP_CIPHER_CTX_free(ctx); clearOpenSSLErrors() }
        let ctCount = body.count - FieldFormat.tagBytes
        guard ctCount >= 1 else { return false }
        return withUnsafeTemporaryAllocation(byteCount: ctCount, alignment: 16) { tmp -> Bool in
            defer { OPENSSL_cleanse(tmp.baseAddress, tmp.count) }
            var n: Int32 = 0
            let keyed = sivKey.withBytes { k in EVP_DecryptInit_ex2(ctx, siv, k.baseAddress?.assumingMemoryBound(to: UInt8.self), nil, nil) == 1 }
            guard keyed else { return false }
            guard EVP_CIPHER_CTX_ctrl(ctx, bitsec_evp_ctrl_gcm_set_tag(), Int32(FieldFormat.tagBytes), UnsafeMutableRawPointer(mutating: base)) == 1 else { return false }
            guard EVP_DecryptUpdate(ctx, nil, &n, aad1.baseAddress?.assumingMemoryBound(to: UInt8.self), Int32(aad1.count)) == 1 else { return false }
            guard EVP_DecryptUpdate(ctx, nil, &n, aad2.baseAddress?.assumingMemoryBound(to: UInt8.self), Int32(aad2.count)) == 1 else { return false }
            let ct = (base + FieldFormat.tagBytes).assumingMemoryBound(to: UInt8.self)
            guard EVP_DecryptUpdate(ctx, tmp.baseAddress?.assumingMemoryBound(to: UInt8.self), &n, ct, Int32(ctCount)) == 1 else { return false }
            var f: Int32 = 0
            guard EVP_DecryptFinal_ex(ctx, nil, &f) == 1 else { return false }
            // The SIV verified: the pad byte is authentic, but a non-zero one is not ours.
            guard tmp[0] == 0 else { return false }
            if ctCount > 1, let src = tmp.baseAddress { out.copyMemory(from: src + 1, byteCount: ctCount - 1) }
            return true
        }
    }
}
