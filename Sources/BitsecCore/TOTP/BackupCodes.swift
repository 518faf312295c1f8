internal import COpenSSL

/// Single-use recovery codes.
///
/// A code is `length` characters (default 10, i.e. 50 bits from OpenSSL's RNG) of Crockford's
/// base32 alphabet in lower case (`0-9a-z` without `i l o u`), shown in groups of five
/// (`7k2mq-x9d4a`). Verification accepts upper case, spaces and hyphens, and reads `i`/`l` as
/// `1` and `o` as `0`, as Crockford's alphabet prescribes for people typing codes.
///
/// The stored form is `bc1$<iterations>$<salt>$<hash>` (or `bc1p$...` when a pepper is
/// configured): PBKDF2-HMAC-SHA256 of the normalised code (or of HMAC-SHA256(pepper, code)),
/// with a 16-byte salt shared by the codes of one batch, base64url without padding. Why:
/// the codes are random, so the work factor only has to make 2^50 guesses per batch
/// impossible after a database leak; one salt per batch lets verification derive once and
/// compare against every stored hash, instead of running the KDF once per stored code; the
/// optional pepper (kept out of the database) makes a leak of the hashes alone useless.
public enum BackupCodes {
    public static let alphabet: [UInt8] = Array("0123456789abcdefghjkmnpqrstvwxyz".utf8)
    public static let minLength = 8, maxLength = 16
    public static let maxCount = 64
    public static let minIterations: Int64 = 1_000, maxIterations: Int64 = 1_000_000
    /// Stored hashes a verification accepts at most.
    public static let maxStored = 64
    static let saltBytes = 16
    static let hashBytes = 32

    public struct Batch: Sendable {
        /// Shown to the user once (`xxxxx-xxxxx`).
        public var codes: [String]
        /// Stored by the caller, one per code, in the same order.
        public var hashes: [String]
    }

    /// Normalises what a person typed into the bare code (lower case, no separators), or nil
    /// when it cannot be a backup code.
    public static func normalise(_ input: UnsafeRawBufferPointer) -> [UInt8]? {
        var out: [UInt8] = []
        out.reserveCapacity(maxLength)
        for var b in input {
            if b == UInt8(ascii: "-") || b == UInt8(ascii: " ") { continue }
            if b >= UInt8(ascii: "A") && b <= UInt8(ascii: "Z") { b += 32 }
            switch b {
            case UInt8(ascii: "i"), UInt8(ascii: "l"): b = UInt8(ascii: "1")
            case UInt8(ascii: "o"): b = UInt8(ascii: "0")
            default: break
            }
            guard alphabet.contains(b), out.count < maxLength else { return nil }
            out.append(b)
        }
        return out.count >= minLength ? out : nil
    }

    static func display(_ code: [UInt8]) -> String {
        var s: [UInt8] = []
        for (i, c) in code.enumerated() {
            if i > 0 && i % 5 == 0 { s.append(UInt8(ascii: "-")) }
            s.append(c)
        }
        return String(decoding: s, as: UTF8.self)
    }

    /// The KDF input: the code, or HMAC-SHA256(pepper, code).
    static func password(_ code: [UInt8], pepper: SecretBytes?) throws(BitsecError) -> [UInt8] {
        guard let pepper else { return code }
        var out = [UInt8](repeating: 0, count: 32)
        var len: UInt32 = 0
        ERR_clear_error()
        let ok = pepper.withBytes { p in
            code.withUnsafeBytes { c in
                out.withUnsafeMutableBytes { o in
                    HMAC(EVP_sha256(), p.baseAddress, Int32(p.count), c.baseAddress?.assumingMemoryBound(to: UInt8.self), c.count,
                         o.baseAddress?.assumingMemoryBound(to: UInt8.self), &len) != nil
                }
            }
        }
        guard ok, len == 32 else { throw OpenSSL.lastError("HMAC-SHA256") }
        return out
    }

    static func derive(_ password: [UInt8], salt: [UInt8], iterations: Int64) throws(BitsecError) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: hashBytes)
        ERR_clear_error()
        let ok = password.withUnsafeBytes { p in
            salt.withUnsafeBytes { s in
                out.withUnsafeMutableBytes { o in
                    PKCS5_PBKDF2_HMAC(p.baseAddress?.assumingMemoryBound(to: CChar.self), Int32(p.count),
                                      s.baseAddress?.assumingMemoryBound(to: UInt8.self), Int32(s.count), Int32(iterations),
                                      EVP_sha256(), Int32(hashBytes), o.baseAddress?.assumingMemoryBound(to: UInt8.self)) == 1
                }
            }
        }
        guard ok else { throw OpenSSL.lastError("PKCS5_PBKDF2_HMAC") }
        return out
    }

    public static func generate(count: Int, length: Int, iterations: Int64, pepper: SecretBytes?) throws(BitsecError) -> Batch {
        guard count >= 1, count <= maxCount else { throw .invalid("count must be 1 to \(maxCount), not \(count)") }
        guard length >= minLength, length <= maxLength else { throw .invalid("length must be \(minLength) to \(maxLength)") }
        let salt = try OpenSSL.randomBytes(count: saltBytes)
        let tag = pepper == nil ? "bc1" : "bc1p"
        let saltText = Base64.encodeString(salt)
        var batch = Batch(codes: [], hashes: [])
        for _ in 0..<count {
            var raw = try OpenSSL.randomBytes(count: length)
            // 256 is a multiple of 32: the low five bits of a random byte are uniform.
            var code = raw.map { alphabet[Int($0 & 31)] }
            wipe(&raw)
            var pw = try password(code, pepper: pepper)
            let h = try derive(pw, salt: salt, iterations: iterations)
            wipe(&pw)
            batch.codes.append(display(code))
            wipe(&code)
            batch.hashes.append("\(tag)$\(iterations)$\(saltText)$\(Base64.encodeString(h))")
        }
        return batch
    }

    struct Stored {
        var peppered: Bool
        var iterations: Int64
        var salt: [UInt8]
        var hash: [UInt8]
    }

    static func parse(_ s: Substring, index: Int) throws(BitsecError) -> Stored {
        let parts = s.split(separator: "$", omittingEmptySubsequences: false)
        guard parts.count == 4, parts[0] == "bc1" || parts[0] == "bc1p",
              let it = Int64(parts[1]), it >= minIterations, it <= maxIterations,
              let salt = Base64.decodeURLStrict(Array(parts[2].utf8)), salt.count == saltBytes,
              let hash = Base64.decodeURLStrict(Array(parts[3].utf8)), hash.count == hashBytes else {
            throw .malformed("stored backup code hash \(index) is not a bitsec backup code hash")
        }
        return Stored(peppered: parts[0] == "bc1p", iterations: it, salt: salt, hash: hash)
    }

    /// Finds the stored hash (newline-separated list) that `code` matches: its index, or nil.
    /// Every stored hash is compared (constant-time), the KDF runs once per distinct salt.
    public static func match(_ code: [UInt8], stored text: String, pepper: SecretBytes?) throws(BitsecError) -> (index: Int, hash: String)? {
        // No stored hashes (every code used): nothing can match.
        let lines = text.isEmpty ? [] : text.split(separator: "\n", omittingEmptySubsequences: false)
        guard lines.count <= maxStored else { throw .tooLarge("more than \(maxStored) stored backup code hashes") }
        var records: [Stored] = []
        for (i, l) in lines.enumerated() { records.append(try parse(l, index: i)) }
        var derived: [(peppered: Bool, iterations: Int64, salt: [UInt8], hash: [UInt8])] = []
        var found: Int? = nil
        for (i, r) in records.enumerated() {
            if r.peppered && pepper == nil {
                throw .config("stored backup code hash \(i) needs the pepper (totp.backup_codes.pepper), which is not configured")
            }
            let d: [UInt8]
            if let e = derived.first(where: { $0.peppered == r.peppered && $0.iterations == r.iterations && $0.salt == r.salt }) {
                d = e.hash
            } else {
                var pw = try password(code, pepper: r.peppered ? pepper : nil)
                d = try derive(pw, salt: r.salt, iterations: r.iterations)
                wipe(&pw)
                derived.append((r.peppered, r.iterations, r.salt, d))
            }
            if OpenSSL.constantTimeEqual(d, r.hash), found == nil { found = i }
        }
        guard let found else { return nil }
        return (found, String(lines[found]))
    }
}
