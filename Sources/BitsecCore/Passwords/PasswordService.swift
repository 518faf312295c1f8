/// The `passwords` section: scrypt hashes in the PHC string format and the password policy.
///
/// ```json
/// "passwords": {
///   "ln": 17, "r": 8, "p": 1, "salt_bytes": 16, "hash_bytes": 32, "max_memory_mib": 256,
///   "min_length": 15, "min_length_mfa": 8, "max_length": 128,
///   "builtin_blocklist": true, "blocklist_file": "/etc/svc/breached.txt", "blocklist_max_mib": 64
/// }
/// ```
///
/// Defaults: scrypt N = 2^17, r = 8, p = 1 (the OWASP Password Storage Cheat Sheet's scrypt
/// setting: 128 MiB and about 0.4 s of CPU per hash on the benchmark machine), a
/// 16-byte salt and a 32-byte hash. `max_memory_mib` bounds what verifying a stored hash may
/// allocate (a hash with larger parameters is refused, not computed).
public final class PasswordService: Capability {
    public static let sectionName = "passwords"

    public let ln: Int, r: Int, p: Int
    public let saltBytes: Int, hashBytes: Int
    public let maxMemory: UInt64
    public let policy: PasswordPolicy
    /// What an unknown user's password is compared with: a hash of a random password at the
    /// configured parameters, so that the dummy verification costs what a real one does.
    private let dummy: ScryptPHC

    /// The longest password hashed or checked, in bytes (1024 code points of 4 bytes).
    public static let maxPasswordBytes = 4096
    public static let maxLengthLimit = 1024

    init(ln: Int, r: Int, p: Int, saltBytes: Int, hashBytes: Int, maxMemory: UInt64, policy: PasswordPolicy) throws(BitsecError) {
        self.ln = ln; self.r = r; self.p = p
        self.saltBytes = saltBytes; self.hashBytes = hashBytes
        self.maxMemory = maxMemory
        self.policy = policy
        let salt = try OpenSSL.randomBytes(count: saltBytes)
        dummy = ScryptPHC(ln: ln, r: r, p: p, salt: salt, hash: try OpenSSL.randomBytes(count: hashBytes))
    }

    public static func read(_ o: ConfigObject, context: CapabilityContext) throws(BitsecError) -> PasswordService {
        let ln = Int(try o.int("ln", in: 10...30, default: 17))
        let r = Int(try o.int("r", in: 1...64, default: 8))
        let p = Int(try o.int("p", in: 1...64, default: 1))
        let saltBytes = Int(try o.int("salt_bytes", in: 16...Int64(ScryptPHC.maxSaltBytes), default: 16))
        let hashBytes = Int(try o.int("hash_bytes", in: 16...Int64(ScryptPHC.maxHashBytes), default: 32))
        let maxMiB = try o.int("max_memory_mib", in: 1...16_384, default: 256)
        let maxMemory = UInt64(maxMiB) << 20
        do {
            try Scrypt.checkParameters(ln: ln, r: r, p: p, maxMemory: maxMemory)
        } catch {
            throw .config("\(o.fieldPath("max_memory_mib")): ln, r and p need more memory than \(maxMiB) MiB")
        }
        let minLength = try o.int("min_length", in: 8...Int64(maxLengthLimit), default: 15)
        let minMFA = try o.int("min_length_mfa", in: 8...Int64(maxLengthLimit), default: 8)
        let maxLength = try o.int("max_length", in: 64...Int64(maxLengthLimit), default: 128)
        guard minLength <= maxLength, minMFA <= maxLength else {
            throw .config("\(o.fieldPath("max_length")): must be at least min_length and min_length_mfa")
        }
        let builtin = try o.bool("builtin_blocklist", default: true)
        let file = try o.string("blocklist_file")
        let maxFileMiB = try o.int("blocklist_max_mib", in: 1...Int64(PasswordPolicy.maxBlocklistFileBytes >> 20), default: 64)
        try o.finish()
        let policy: PasswordPolicy
        do {
            policy = try PasswordPolicy(minLength: Int(minLength), minLengthMFA: Int(minMFA), maxLength: Int(maxLength),
                                        builtin: builtin, file: file, maxFileBytes: Int(maxFileMiB) << 20)
        } catch {
            throw .config(error.status == .config ? error.detail : "\(o.fieldPath("blocklist_file")): \(error.detail)")
        }
        return try PasswordService(ln: ln, r: r, p: p, saltBytes: saltBytes, hashBytes: hashBytes, maxMemory: maxMemory, policy: policy)
    }

    /// The length of every PHC string `hash` writes.
    public var hashTextLength: Int {
        "$scrypt$ln=\(ln),r=\(r),p=\(p)$".utf8.count + Base64.encodedLength(saltBytes, padded: false) + 1
            + Base64.encodedLength(hashBytes, padded: false)
    }

    /// A new PHC string for a password (a fresh random salt each time).
    public func hash(_ password: UnsafeRawBufferPointer) throws(BitsecError) -> [UInt8] {
        let salt = try OpenSSL.randomBytes(count: saltBytes)
        let h = try Scrypt.derive(password: password, salt: salt, ln: ln, r: r, p: p, length: hashBytes, maxMemory: maxMemory)
        return ScryptPHC(ln: ln, r: r, p: p, salt: salt, hash: h).text
    }

    /// Whether the password matches the stored PHC string (compared in constant time), and
    /// whether the stored hash should be replaced by `hash(password)` after a match. nil
    /// `stored` is the dummy verification of an unknown user: same work, never a match.
    public func verify(_ password: UnsafeRawBufferPointer, stored: UnsafeRawBufferPointer?) throws(BitsecError) -> (match: Bool, needsRehash: Bool) {
        let phc: ScryptPHC
        if let stored { phc = try ScryptPHC.parse(stored) } else { phc = dummy }
        try Scrypt.checkParameters(ln: phc.ln, r: phc.r, p: phc.p, maxMemory: maxMemory)
        var d = try Scrypt.derive(password: password, salt: phc.salt, ln: phc.ln, r: phc.r, p: phc.p, length: phc.hash.count, maxMemory: maxMemory)
        defer { wipe(&d) }
        let equal = OpenSSL.constantTimeEqual(d, phc.hash)
        guard stored != nil else { return (false, false) }
        return (equal, needsRehash(phc))
    }

    func needsRehash(_ phc: ScryptPHC) -> Bool {
        phc.ln != ln || phc.r != r || phc.p != p || phc.salt.count != saltBytes || phc.hash.count != hashBytes
    }

    /// Whether a stored hash should be replaced at the next successful login: anything that
    /// is not a well-formed scrypt PHC string with the configured parameters (another scheme
    /// the service still verifies itself, older parameters, or an unparsable value).
    public func needsRehash(stored: UnsafeRawBufferPointer) -> Bool {
        guard let phc = try? ScryptPHC.parse(stored) else { return true }
        return needsRehash(phc)
    }

    public func check(_ password: UnsafeRawBufferPointer, mfa: Bool) -> PasswordPolicyDecision {
        policy.check(password, mfa: mfa)
    }

    public func describe() -> JSONValue {
        func num(_ v: Int) -> JSONValue { .number(JSONNumber(int64: Int64(v))) }
        var f: [(key: String, value: JSONValue)] = [
            ("scheme", .string("scrypt")), ("ln", num(ln)), ("r", num(r)), ("p", num(p)),
            ("salt_bytes", num(saltBytes)), ("hash_bytes", num(hashBytes)),
            ("max_memory_mib", num(Int(maxMemory >> 20))),
            ("min_length", num(policy.minLength)), ("min_length_mfa", num(policy.minLengthMFA)),
            ("max_length", num(policy.maxLength)), ("blocklist_entries", num(policy.blocklistCount)),
        ]
        if let file = policy.blocklistFile { f.append(("blocklist_file", .string(file))) }
        return .object(JSONObject(f))
    }
}
