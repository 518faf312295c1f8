import Testing
import Glibc
import BitsecCore

private func repoPath(_ rel: String) -> String {
    var path = #filePath
    for _ in 0..<3 { path = String(path[..<(path.lastIndex(of: "/") ?? path.startIndex)]) }
    return path + "/" + rel
}

private func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }

private func hexBytes(_ s: String) -> [UInt8] { Hex.decode(Array(s.utf8)) ?? [] }

/// A small-cost configuration so that the suite stays fast (the defaults are measured in BENCHMARKS.md).
private let fastSection = #""passwords": {"ln": 10, "r": 8, "p": 1}"#

private func runtime(_ section: String = fastSection) throws -> Runtime {
    try Runtime.open(config: "{\(section)}")
}

private func parse(_ s: String) throws(BitsecError) -> ScryptPHC {
    try bytes(s).withRawBytes { (r) throws(BitsecError) -> ScryptPHC in try ScryptPHC.parse(r) }
}

@Suite struct PasswordsTests {
    @Test func rfc7914Vectors() throws {
        let doc = try JSONReader.parse(try readFile(repoPath("tests/vectors/scrypt/rfc7914.json"), limit: 1 << 20))
        let vectors = doc["vectors"]?.arrayValue ?? []
        #expect(vectors.count == 3)
        for v in vectors {
            guard let pw = v["password"]?.stringValue, let salt = v["salt"]?.stringValue, let ln = v["ln"]?.int64Value,
                  let r = v["r"]?.int64Value, let p = v["p"]?.int64Value, let dk = v["dk"]?.stringValue else { Issue.record("vector shape"); continue }
            let l = Int(ln), rr = Int(r), pp = Int(p)
            try Scrypt.checkParameters(ln: l, r: rr, p: pp, maxMemory: 64 << 20)
            let out = try bytes(pw).withRawBytes { (raw) throws(BitsecError) -> [UInt8] in
                try Scrypt.derive(password: raw, salt: bytes(salt), ln: l, r: rr, p: pp, length: 64, maxMemory: 64 << 20)
            }
            #expect(out == hexBytes(dk), "scrypt N=2^\(l) r=\(rr) p=\(pp)")
        }
    }

    @Test func phcRoundTripAndVerify() throws {
        let rt = try runtime()
        defer { rt.shutdown() }
        let s = try #require(rt.passwords)
        let h = try bytes("correct horse battery staple").withRawBytes { (r) throws(BitsecError) -> [UInt8] in try s.hash(r) }
        let text = String(decoding: h, as: UTF8.self)
        #expect(text.hasPrefix("$scrypt$ln=10,r=8,p=1$"))
        #expect(h.count == s.hashTextLength)
        #expect(!text.contains("="[...]) || text.filter { $0 == "=" }.count == 3)  // ln=, r=, p= only: no padding
        let phc = try parse(text)
        #expect(phc.salt.count == 16 && phc.hash.count == 32)
        #expect(phc.text == h)
        func verify(_ pw: String, _ stored: [UInt8]?) throws -> (match: Bool, needsRehash: Bool) {
            try bytes(pw).withRawBytes { (p) throws(BitsecError) in
                if let stored {
                    return try stored.withRawBytes { (st) throws(BitsecError) in try s.verify(p, stored: st) }
                }
                return try s.verify(p, stored: nil)
            }
        }
        #expect(try verify("correct horse battery staple", h) == (true, false))
        #expect(try verify("correct horse battery stapl", h).match == false)
        #expect(try verify("Correct horse battery staple", h).match == false)
        // Two hashes of one password differ (fresh salt).
        let h2 = try bytes("correct horse battery staple").withRawBytes { (r) throws(BitsecError) -> [UInt8] in try s.hash(r) }
        #expect(h2 != h)
        // The dummy verification never matches, whatever the password.
        #expect(try verify("correct horse battery staple", nil) == (false, false))
        // A hash with other parameters verifies and asks for a rehash.
        let old = try bytes("pw-with-old-params").withRawBytes { (r) throws(BitsecError) -> [UInt8] in
            let salt = try OpenSSL.randomBytes(count: 16)
            let d = try Scrypt.derive(password: r, salt: salt, ln: 11, r: 8, p: 1, length: 32, maxMemory: 64 << 20)
            return ScryptPHC(ln: 11, r: 8, p: 1, salt: salt, hash: d).text
        }
        #expect(try verify("pw-with-old-params", old) == (true, true))
        #expect(old.withUnsafeBytes { s.needsRehash(stored: $0) })
        #expect(!h.withUnsafeBytes { s.needsRehash(stored: $0) })
        #expect(bytes("scrypt$16384$8$1$c2FsdA==$aGFzaA==").withUnsafeBytes { s.needsRehash(stored: $0) })
        #expect(bytes("").withUnsafeBytes { s.needsRehash(stored: $0) })
    }

    /// A stored hash produced elsewhere (Python's hashlib.scrypt, the same PHC layout) verifies.
    @Test func verifiesAnIndependentlyProducedHash() throws {
        let rt = try runtime()
        defer { rt.shutdown() }
        let s = try #require(rt.passwords)
        // hashlib.scrypt(b"pleaseletmein", salt=b"SodiumChloride", n=16384, r=8, p=1, dklen=64), in PHC form.
        let stored = "$scrypt$ln=14,r=8,p=1$U29kaXVtQ2hsb3JpZGU$cCO9yzr9c0hGHAbNgf046/2o+7qQT44+qbVD9lRdofLVQylVYT8Pz2LUlwUkKpr55h6F3A1lHkDfzwF7RVdYhw"
        let d = try bytes("pleaseletmein").withRawBytes { (p) throws(BitsecError) in
            try bytes(stored).withRawBytes { (st) throws(BitsecError) in try s.verify(p, stored: st) }
        }
        #expect(d == (true, true))
    }

    @Test func parserRefusesMalformedAndAbsurd() throws {
        let salt = "c2FsdHNhbHRzYWx0c2FsdA"  // 16 bytes
        let hash = "aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g"  // 32 bytes
        let good = "$scrypt$ln=14,r=8,p=1$\(salt)$\(hash)"
        _ = try parse(good)
        let malformed = [
            "", "scrypt", "$scrypt$", "$scrypt$ln=14,r=8,p=1$\(salt)", "$scrypt$ln=14,r=8,p=1$\(salt)$\(hash)$x",
            "$scrypt$r=8,ln=14,p=1$\(salt)$\(hash)", "$scrypt$ln=014,r=8,p=1$\(salt)$\(hash)", "$scrypt$ln=-1,r=8,p=1$\(salt)$\(hash)",
            "$scrypt$ln=14,r=8$\(salt)$\(hash)", "$scrypt$ln=14,r=8,p=1,x=1$\(salt)$\(hash)", "$scrypt$ln=0,r=8,p=1$\(salt)$\(hash)",
            "$scrypt$ln=63,r=8,p=1$\(salt)$\(hash)", "$scrypt$ln=14,r=99999999999,p=1$\(salt)$\(hash)",
            "$scrypt$ln=14,r=8,p=1$\(salt)==$\(hash)", "$scrypt$ln=14,r=8,p=1$c2FsdA$\(hash)",  // salt too short
            "$scrypt$ln=14,r=8,p=1$\(salt)$aGFzaA",  // hash too short
            "$scrypt$ln=14,r=8,p=1$\(salt.replacingFirst("c", with: "-"))$\(hash)",  // url alphabet
            "$scrypt$ln=14,r=8,p=1$\(salt)$\(hash.dropLast())B",  // non-canonical trailing bits
            "$scrypt$ln=1 4,r=8,p=1$\(salt)$\(hash)", "$scrypt$ln=14,,r=8,p=1$\(salt)$\(hash)",
        ]
        for m in malformed {
            expectError(.malformed) { _ = try parse(m) }
        }
        expectError(.unsupported) { _ = try parse("$") }
        expectError(.unsupported) { _ = try parse("$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHQ$aGFzaA") }
        expectError(.tooLarge) { _ = try parse("$scrypt$" + String(repeating: "A", count: 300)) }
        // Affordable? Memory bound from the configuration, checked before OpenSSL allocates.
        expectError(.tooLarge) { try Scrypt.checkParameters(ln: 30, r: 8, p: 1, maxMemory: 256 << 20) }
        expectError(.tooLarge) { try Scrypt.checkParameters(ln: 14, r: 8, p: 100_000, maxMemory: 256 << 20) }
        expectError(.tooLarge) { try Scrypt.checkParameters(ln: 14, r: 1 << 20, p: 1 << 20, maxMemory: .max) }
        expectError(.tooLarge) { try Scrypt.checkParameters(ln: 10, r: 8, p: 65, maxMemory: .max) }
        // Bool and non-optional comparisons only: #expect's operand capture of a UInt64?
        // reads 9 bytes from an 8-byte slot under AddressSanitizer (Swift Testing, 6.3.1).
        #expect(Scrypt.memoryBytes(n: .max, r: 8, p: 1).map { _ in false } ?? true)
        try Scrypt.checkParameters(ln: 17, r: 8, p: 1, maxMemory: 256 << 20)
        guard let memory = Scrypt.memoryBytes(n: 1 << 17, r: 8, p: 1) else {
            Issue.record("no memory figure for ln 17")
            return
        }
        #expect(memory == 128 * 8 * ((1 << 17) + 3))
    }

    /// A stored hash whose parameters exceed max_memory_mib is refused without hashing.
    @Test func verifyRefusesHashBeyondMemoryLimit() throws {
        let rt = try runtime(#""passwords": {"ln": 10, "r": 8, "p": 1, "max_memory_mib": 16}"#)
        defer { rt.shutdown() }
        let s = try #require(rt.passwords)
        let stored = "$scrypt$ln=20,r=8,p=1$c2FsdHNhbHRzYWx0c2FsdA$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g"
        expectError(.tooLarge, "memory") {
            _ = try bytes("x").withRawBytes { (p) throws(BitsecError) in
                try bytes(stored).withRawBytes { (st) throws(BitsecError) in try s.verify(p, stored: st) }
            }
        }
    }

    @Test func configurationIsValidated() throws {
        expectError(.config, "passwords.max_memory_mib") { _ = try runtime(#""passwords": {"ln": 20, "r": 8, "max_memory_mib": 64}"#) }
        expectError(.config, "passwords.min_length") { _ = try runtime(#""passwords": {"min_length": 6}"#) }
        expectError(.config, "passwords.max_length") { _ = try runtime(#""passwords": {"max_length": 32}"#) }
        expectError(.config, "passwords.bogus") { _ = try runtime(#""passwords": {"bogus": 1}"#) }
        expectError(.config, "passwords.blocklist_file") { _ = try runtime(#""passwords": {"blocklist_file": "/nonexistent/list.txt"}"#) }
        let rt = try runtime(#""passwords": {}"#)
        defer { rt.shutdown() }
        let s = try #require(rt.passwords)
        #expect((s.ln, s.r, s.p, s.saltBytes, s.hashBytes) == (17, 8, 1, 16, 32))
        #expect((s.policy.minLength, s.policy.minLengthMFA, s.policy.maxLength) == (15, 8, 128))
        #expect(s.policy.blocklistCount > 10_000)
    }

    private func check(_ s: PasswordService, _ pw: String, mfa: Bool = false) -> PasswordPolicyDecision {
        bytes(pw).withUnsafeBytes { s.check($0, mfa: mfa) }
    }

    @Test func policyLengthsInCodePoints() throws {
        let rt = try runtime()
        defer { rt.shutdown() }
        let s = try #require(rt.passwords)
        #expect(check(s, "fourteen chars").reasons == .tooShort)
        #expect(check(s, "fifteen chars!!").accepted)
        #expect(check(s, "eight ch", mfa: true).accepted)
        #expect(check(s, "seven c", mfa: true).reasons == .tooShort)
        // 64 and 128 code points are accepted, 129 are not.
        #expect(check(s, String(repeating: "k", count: 64)).accepted)
        #expect(check(s, String(repeating: "k", count: 128)).accepted)
        #expect(check(s, String(repeating: "k", count: 129)).reasons == .tooLong)
        // Code points, not bytes: 15 emoji (60 bytes) and 15 accented letters (30 bytes) are 15.
        let emoji = String(repeating: "\u{1F512}", count: 15)
        #expect(emoji.utf8.count == 60)
        #expect(check(s, emoji).accepted && check(s, emoji).length == 15)
        #expect(check(s, String(repeating: "\u{E9}", count: 14)).reasons == .tooShort)
        // 128 four-byte code points (512 bytes) are 128: accepted.
        #expect(check(s, String(repeating: "\u{1F512}", count: 128)).accepted)
        // A combining sequence is two code points (callers pass NFKC: "é" composed is one).
        #expect(check(s, "e\u{301}").length == 2)
        // No composition rules: lower-case letters and spaces only are fine.
        #expect(check(s, "purple monkey dishwasher").accepted)
    }

    @Test func policyBlocklist() throws {
        let rt = try runtime()
        defer { rt.shutdown() }
        let s = try #require(rt.passwords)
        #expect(check(s, "password", mfa: true).reasons == .blocklisted)
        #expect(check(s, "PassWord", mfa: true).reasons == .blocklisted)
        #expect(check(s, "qwertyuiop", mfa: true).reasons == .blocklisted)
        #expect(check(s, "password").reasons == [.tooShort, .blocklisted])
        #expect(check(s, "xk3-password-jq", mfa: true).accepted)
    }

    @Test func blocklistFileLoadedAndBounded() throws {
        let dir = "/tmp/bitsec-pw-\(getpid())"
        mkdir(dir, 0o700)
        defer { unlink(dir + "/list.txt"); unlink(dir + "/big.txt"); unlink(dir + "/bad.txt"); rmdir(dir) }
        func write(_ name: String, _ data: [UInt8]) {
            let fd = open(dir + "/" + name, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
            _ = data.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            close(fd)
        }
        write("list.txt", bytes("Tr0ub4dor&3 horse\r\n\nour-company-name-2026\nmotdepasse-trés-secret\n"))
        let rt = try runtime(#""passwords": {"ln": 10, "builtin_blocklist": false, "blocklist_file": "\#(dir)/list.txt"}"#)
        defer { rt.shutdown() }
        let s = try #require(rt.passwords)
        #expect(s.policy.blocklistCount == 3)
        #expect(check(s, "tr0ub4dor&3 HORSE").reasons == .blocklisted)
        #expect(check(s, "OUR-COMPANY-NAME-2026").reasons == .blocklisted)
        #expect(check(s, "motdepasse-trés-secret").reasons == .blocklisted)
        #expect(check(s, "qwertyuiopasdfgh").accepted)  // built-in list switched off
        // Flood: a file beyond blocklist_max_mib is refused (read stops at the bound).
        write("big.txt", [UInt8](repeating: 0x61, count: (1 << 20) + 1))
        expectError(.config, "blocklist_file") {
            _ = try runtime(#""passwords": {"blocklist_max_mib": 1, "blocklist_file": "\#(dir)/big.txt"}"#)
        }
        // A line that is not UTF-8 refuses the file (a binary file must not load as a short list).
        write("bad.txt", [0x61, 0x62, 0xFF, 0x0A])
        expectError(.config, "line 1") { _ = try runtime(#""passwords": {"blocklist_file": "\#(dir)/bad.txt"}"#) }
    }

    /// A big list (200,000 entries) loads, and lookups stay hash-set lookups.
    @Test func blocklistFloodLoads() throws {
        let path = "/tmp/bitsec-pw-flood-\(getpid()).txt"
        defer { unlink(path) }
        var data: [UInt8] = []
        for i in 0..<200_000 { data += bytes("breached-password-\(i)\n") }
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        _ = data.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        close(fd)
        let rt = try runtime(#""passwords": {"ln": 10, "builtin_blocklist": false, "blocklist_file": "\#(path)"}"#)
        defer { rt.shutdown() }
        let s = try #require(rt.passwords)
        #expect(s.policy.blocklistCount == 200_000)
        #expect(check(s, "breached-password-199999").reasons == .blocklisted)
        #expect(check(s, "breached-password-200000").accepted)
    }
}

extension String {
    fileprivate func replacingFirst(_ a: Character, with b: String) -> String {
        guard let i = firstIndex(of: a) else { return self }
        return String(self[..<i]) + b + String(self[index(after: i)...])
    }
}
