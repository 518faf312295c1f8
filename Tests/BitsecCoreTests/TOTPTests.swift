import Testing
import Glibc
import Dispatch
import Synchronization
import BitsecCore

/// The RFC 4226/6238 test vectors in the repository (tests/vectors/totp), found from this file's path.
private func vectors(_ name: String) throws -> JSONValue {
    var path = #filePath
    for _ in 0..<3 { path = String(path[..<(path.lastIndex(of: "/") ?? path.startIndex)]) }
    let bytes = try readFile(path + "/tests/vectors/totp/" + name, limit: 1 << 20)
    return try JSONReader.parse(bytes)
}

private func raw<R>(_ s: String, _ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
    try Array(s.utf8).withUnsafeBytes(body)
}

private func rawT<R>(_ s: String, _ body: (UnsafeRawBufferPointer) throws(BitsecError) -> R) throws(BitsecError) -> R {
    try Array(s.utf8).withRawBytes(body)
}

private func checkTOTP(_ s: String, _ code: String, _ p: OTPParameters, window: Int, at: Int64) throws(BitsecError) -> OTPDecision {
    try rawT(s) { (sp) throws(BitsecError) -> OTPDecision in
        try OTP.withSecret(sp) { (key) throws(BitsecError) -> OTPDecision in
            try rawT(code) { (c) throws(BitsecError) -> OTPDecision in try OTP.checkTOTP(key: key, code: c, params: p, window: window, at: at) }
        }
    }
}

private func checkHOTP(_ s: String, _ code: String, _ a: OTPAlgorithm, digits: Int, counter: UInt64, lookAhead: Int) throws(BitsecError) -> OTPDecision {
    try rawT(s) { (sp) throws(BitsecError) -> OTPDecision in
        try OTP.withSecret(sp) { (key) throws(BitsecError) -> OTPDecision in
            try rawT(code) { (c) throws(BitsecError) -> OTPDecision in
                try OTP.checkHOTP(key: key, code: c, algorithm: a, digits: digits, counter: counter, lookAhead: lookAhead)
            }
        }
    }
}

private func hexDecode(_ s: String) -> [UInt8] { Hex.decode(Array(s.utf8)) ?? [] }

private func text(_ b: [UInt8]) -> String { String(decoding: b, as: UTF8.self) }

/// A test secret of `bits` bits (base32).
private func secret(_ bits: Int = 160) throws -> String { text(try OTP.generateSecret(bits: bits)) }

@Suite struct OTPVectorTests {
    @Test func rfc4226() throws {
        let doc = try vectors("rfc4226.json")
        let b32 = try #require(doc["secret"]?["base32"]?.stringValue)
        let list = try #require(doc["vectors"]?.arrayValue)
        #expect(list.count == 10)
        for v in list {
            let count = try #require(v["count"]?.int64Value)
            let expected = try #require(v["hotp"]?.stringValue)
            let code = try raw(b32) { try OTP.hotp(secret: $0, counter: UInt64(count), algorithm: .sha1, digits: 6) }
            #expect(text(code) == expected, "count \(count)")
            // The 31-bit truncated value, checked through 8 digits (it is below 10^10 but its
            // last 8 digits are what an 8-digit code shows).
            let truncated = try #require(v["truncated_decimal"]?.int64Value)
            let eight = try raw(b32) { try OTP.hotp(secret: $0, counter: UInt64(count), algorithm: .sha1, digits: 8) }
            #expect(Int64(text(eight)) == truncated % 100_000_000)
        }
    }

    @Test func rfc6238() throws {
        let doc = try vectors("rfc6238.json")
        let list = try #require(doc["vectors"]?.arrayValue)
        #expect(list.count == 18)
        for v in list {
            let mode = try #require(v["mode"]?.stringValue ?? v["algorithm"]?.stringValue ?? v["hash"]?.stringValue)
            let alg = try #require(OTPAlgorithm(name: mode))
            let time = try #require(v["time"]?.int64Value)
            let expected = try #require(v["totp"]?.stringValue)
            let seedHex = try #require(doc["seeds"]?[alg.name]?["hex"]?.stringValue ?? doc["seeds"]?[mode]?["hex"]?.stringValue)
            let b32 = text(Base32.encode(hexDecode(seedHex)))
            let p = OTPParameters(algorithm: alg, digits: 8, period: 30, t0: 0)
            let code = try raw(b32) { try OTP.totp(secret: $0, params: p, at: time) }
            #expect(text(code) == expected, "\(mode) at \(time)")
            // And it verifies at that instant, window 0.
            let d = try checkTOTP(b32, expected, p, window: 0, at: time)
            #expect(d.accepted && d.step == time / 30)
        }
    }
}

@Suite struct Base32Tests {
    @Test func roundTripCaseAndPadding() throws {
        for n in 0..<40 {
            let data = try OpenSSL.randomBytes(count: n)
            let enc = Base32.encode(data)
            let padded = Base32.encode(data, padded: true)
            #expect(padded.count % 8 == 0)
            if n == 0 { continue }
            #expect(try enc.withUnsafeBytes { try Base32.decode($0) } == data)
            #expect(try padded.withUnsafeBytes { try Base32.decode($0) } == data)
            let lower = Array(text(enc).lowercased().utf8)
            #expect(try lower.withUnsafeBytes { try Base32.decode($0) } == data)
        }
        // RFC 4648 section 10.
        #expect(text(Base32.encode(Array("foobar".utf8), padded: true)) == "MZXW6YTBOI======")
        #expect(try raw("mzxw6ytboi") { try Base32.decode($0) } == Array("foobar".utf8))
    }

    @Test func malformedSecretsNeverEchoed() throws {
        for bad in ["", "====", "MZXW6YTBO", "MZXW6YTBOI=", "MZXW6YTBOI==========", "MZXW 6YTBOI", "MZXW6YTB0I", "MZ=XW6YTBOI", "MZXW6YTBOÉ"] {
            do {
                _ = try raw(bad) { try Base32.decode($0) }
                Issue.record("\(bad) decoded")
            } catch {
                let e = error as? BitsecError
                #expect(e?.status == .malformed)
                if bad.count > 4 { #expect(e?.detail.contains(bad) == false) }
                #expect(e?.detail.contains("base32") == true)
            }
        }
    }

    @Test func secretSizes() throws {
        let short = text(Base32.encode([UInt8](repeating: 7, count: 8)))  // 64 bits
        expectError(.invalidArgument, "shorter than the minimum") { _ = try raw(short) { try OTP.decodeSecret($0) } }
        let eighty = text(Base32.encode([UInt8](repeating: 7, count: 10)))
        #expect(try raw(eighty) { try OTP.decodeSecret($0) }.count == 10)
        expectError(.invalidArgument, "shorter") { _ = try raw(eighty) { try OTP.decodeSecret($0, minBits: 128) } }
        let huge = String(repeating: "A", count: 300)
        expectError(.tooLarge) { _ = try raw(huge) { try OTP.decodeSecret($0) } }
        // Generation: 128 bits at least, 160 by default.
        #expect(try secret().count == 32)
        #expect(try secret(128).count == 26)
        expectError(.invalidArgument) { _ = try OTP.generateSecret(bits: 120) }
        expectError(.invalidArgument) { _ = try OTP.generateSecret(bits: 130) }
        expectError(.invalidArgument) { _ = try OTP.generateSecret(bits: 520) }
        #expect(try secret() != secret())
    }
}

@Suite struct OTPCheckTests {
    @Test func windowOffsets() throws {
        let s = try secret()
        let at: Int64 = 1_700_000_015
        for alg in OTPAlgorithm.allCases {
            for digits in 6...8 {
                let p = OTPParameters(algorithm: alg, digits: digits, period: 30)
                for offset in -2...2 {
                    let code = try raw(s) { try OTP.totp(secret: $0, params: p, at: at + Int64(offset) * 30) }
                    for window in 0...2 {
                        let d = try checkTOTP(s, text(code), p, window: window, at: at)
                        if abs(offset) <= window {
                            #expect(d.accepted && d.step == at / 30 + Int64(offset), "\(alg) \(digits) offset \(offset) window \(window)")
                        } else {
                            #expect(d.reason == .wrongCode, "\(alg) \(digits) offset \(offset) window \(window)")
                        }
                    }
                }
            }
        }
    }

    @Test func malformedCodesAreDecisions() throws {
        let s = try secret()
        let p = OTPParameters()
        for code in ["", "12345", "1234567", "12a456", " 123456", "123456 ", "+12345", "-12345", "１２３４５６", "12\u{0}456", "123.45"] {
            let d = try checkTOTP(s, code, p, window: 1, at: 1_700_000_000)
            #expect(d.reason == .malformedCode, "\(code)")
        }
    }

    @Test func hotpLookAhead() throws {
        let s = try secret()
        let code = try raw(s) { try OTP.hotp(secret: $0, counter: 12, algorithm: .sha256, digits: 7) }
        let d = try checkHOTP(s, text(code), .sha256, digits: 7, counter: 10, lookAhead: 3)
        #expect(d.accepted && d.step == 12)
        let late = try checkHOTP(s, text(code), .sha256, digits: 7, counter: 13, lookAhead: 3)
        #expect(late.reason == .wrongCode)
    }

    @Test func instantBeforeT0() throws {
        let p = OTPParameters(t0: 1000)
        expectError(.invalidArgument, "before t0") { _ = try p.step(at: 999) }
        #expect(try p.step(at: 1030) == 1)
    }
}

@Suite struct ProvisioningURITests {
    @Test func googleKeyURIFormat() throws {
        let s = "jbswy3dpehpk3pxpjbswy3dpehpk3pxp"
        let uri = try raw(s) { try ProvisioningURI.make(secret: $0, account: "alice@bitcorp.example", issuer: "Bitcorp ERP", params: OTPParameters()) }
        #expect(text(uri) == "otpauth://totp/Bitcorp%20ERP:alice@bitcorp.example?secret=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP&issuer=Bitcorp%20ERP&algorithm=SHA1&digits=6&period=30")
        let odd = try raw(s) { try ProvisioningURI.make(secret: $0, account: "José Ñ&?=/#+%", issuer: nil,
                                                       params: OTPParameters(algorithm: .sha512, digits: 8, period: 60)) }
        #expect(text(odd) == "otpauth://totp/Jos%C3%A9%20%C3%91%26%3F%3D%2F%23%2B%25?secret=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP&algorithm=SHA512&digits=8&period=60")
        expectError(.invalidArgument, "':'") { _ = try raw(s) { try ProvisioningURI.make(secret: $0, account: "a:b", issuer: "X", params: OTPParameters()) } }
        expectError(.invalidArgument, "':'") { _ = try raw(s) { try ProvisioningURI.make(secret: $0, account: "a", issuer: "X:Y", params: OTPParameters()) } }
        expectError(.invalidArgument, "control") { _ = try raw(s) { try ProvisioningURI.make(secret: $0, account: "a\nb", issuer: nil, params: OTPParameters()) } }
        expectError(.invalidArgument, "empty") { _ = try raw(s) { try ProvisioningURI.make(secret: $0, account: "", issuer: nil, params: OTPParameters()) } }
        expectError(.malformed) { _ = try raw("not base32!") { try ProvisioningURI.make(secret: $0, account: "a", issuer: nil, params: OTPParameters()) } }
    }
}

/// Records automatic audit events.
private final class RecordingHook: AuditHook, @unchecked Sendable {
    private let events = Locked<[String]>([])
    var automaticEventsEnabled: Bool { true }
    func emitAutomatic(_ event: AutomaticAuditEvent) {
        events.with { $0.append("\(event.type)/\(event.subtype)/\(event.reason ?? "")/\(event.actor ?? "-")") }
    }
    var recorded: [String] { events.with { $0 } }
}

private func service(_ section: String, redis: Bool = false, hook: (any AuditHook)? = nil) throws -> TOTPService? {
    var doc = #"{"allow_inline_secrets": true, "totp": \#(section)"#
    if redis {
        guard let port = TestRedis.port else { return nil }
        doc += #", "redis": {"host": "127.0.0.1", "port": \#(port), "command_timeout_ms": 1000}"#
    }
    doc += "}"
    if hook == nil { return try Runtime.open(config: doc).totp }
    // With an audit hook: build the section directly with a context that carries it.
    let root = try ConfigObject(try JSONReader.parse(doc), path: "")
    let ctx = ConfigContext(allowInlineSecrets: true)
    var pool: RedisPool? = nil
    if let r = try root.object("redis") { pool = RedisPool(config: try RedisConfig.read(r, context: ctx)) }
    return try TOTPService.read(try #require(try root.object("totp")), context: CapabilityContext(config: ctx, redis: pool, audit: hook))
}

/// The totp section of a runtime whose features are all in `kind` (through the
/// configuration: `store.default`). Nil when the test run has no Redis (recorded).
private func service(_ kind: TestStore, _ section: String) throws -> TOTPService? {
    guard let rt = try TestStores.runtime(kind, #""allow_inline_secrets": true, "totp": \#(section)"#) else { return nil }
    let t = try rt.require(rt.totp)
    #expect(t.store == kind && t.usesRedis == (kind == .redis))
    return t
}

private func verify(_ t: TOTPService, _ s: String, _ code: String, _ user: String?, at: Int64) throws -> OTPDecision {
    try rawT(s) { (sp) throws(BitsecError) -> OTPDecision in
        try rawT(code) { (cp) throws(BitsecError) -> OTPDecision in try t.verify(secret: sp, code: cp, user: user, at: at) }
    }
}

private func code(_ t: TOTPService, _ s: String, at: Int64) throws -> String {
    text(try rawT(s) { (sp) throws(BitsecError) -> [UInt8] in try t.now(secret: sp, at: at) })
}

/// A code that is wrong for every step of the window around `at`.
private func wrongCode(_ t: TOTPService, _ s: String, at: Int64) throws -> String {
    let near = try (-1...1).map { try code(t, s, at: at + Int64($0) * t.params.period) }
    var n = 0
    while true {
        let c = String(repeating: "7", count: 6 - String(n).count) + String(n)
        if !near.contains(c) { return c }
        n += 1
    }
}

private func uniqueUser(_ tag: String) -> String { "\(tag)-\(getpid())-\(Clock.nowMicros())-\(UInt32.random(in: 0...UInt32.max))" }

@Suite struct TOTPServiceTests {
    func replayScenario(_ t: TOTPService) throws {
        let s = try secret()
        let user = uniqueUser("replay")
        let at: Int64 = 1_750_000_000
        let c = try code(t, s, at: at)
        #expect(try verify(t, s, c, user, at: at) == OTPDecision(.ok, step: at / 30))
        #expect(try verify(t, s, c, user, at: at).reason == .replayed)
        #expect(try verify(t, s, c, user, at: at + 20).reason == .replayed)
        // An earlier step (still in the window) is refused too.
        let earlier = try code(t, s, at: at - 30)
        #expect(try verify(t, s, earlier, user, at: at).reason == .replayed)
        // The next step is accepted, once.
        let next = try code(t, s, at: at + 30)
        #expect(try verify(t, s, next, user, at: at + 30).accepted)
        #expect(try verify(t, s, next, user, at: at + 31).reason == .replayed)
        // Another user with the same secret has its own state.
        #expect(try verify(t, s, c, user + "-other", at: at).accepted)
        // No user: keyed by the secret.
        let s2 = try secret()
        let c2 = try code(t, s2, at: at)
        #expect(try verify(t, s2, c2, nil, at: at).accepted)
        #expect(try verify(t, s2, c2, nil, at: at).reason == .replayed)
    }

    /// Users are told apart by their bytes: "jos\u{E9}" and "jose\u{301}" each have their own
    /// last step and failure count. In process they were one user (Swift compares strings up
    /// to canonical equivalence): one's accepted code made the other's code of the same step
    /// a replay, and one's failures throttled the other.
    @Test(arguments: TestStores.kinds) func canonicallyEquivalentUsersAreTwoUsers(kind: TestStore) throws {
        guard let t = try service(kind, #"{"throttle": {"max_failures": 2}}"#) else { return }
        let s = try secret()
        let tail = uniqueUser("-u")
        let composed = "jos\u{E9}" + tail, decomposed = "jose\u{301}" + tail
        let at: Int64 = 1_755_000_000
        let c = try code(t, s, at: at)
        #expect(try verify(t, s, c, composed, at: at).accepted, "\(kind)")
        #expect(try verify(t, s, c, decomposed, at: at).accepted, "\(kind): the other user's code was a replay")
        let wrong = try wrongCode(t, s, at: at)
        for _ in 0..<2 { _ = try verify(t, s, wrong, composed, at: at + 1) }
        #expect(try verify(t, s, wrong, decomposed, at: at + 1).reason == .wrongCode, "\(kind): throttled by the other user")
    }

    @Test(arguments: TestStores.kinds) func replay(kind: TestStore) throws {
        guard let t = try service(kind, "{}") else { return }
        try replayScenario(t)
    }

    /// The older field `state` still selects the store.
    @Test func replayThroughRedisWithTheOlderStateField() throws {
        guard let t = try service(#"{"state": "redis"}"#, redis: true) else { return }
        #expect(t.usesRedis && t.store == .redis)
        try replayScenario(t)
    }

    @Test func twoRuntimesSharingRedisAcceptOneCodeOnce() throws {
        guard let a = try service(#"{"state": "redis"}"#, redis: true), let b = try service(#"{"state": "redis"}"#, redis: true) else { return }
        let s = try secret()
        let user = uniqueUser("shared")
        let at = Clock.nowSeconds()
        let c = try code(a, s, at: at)
        #expect(try verify(a, s, c, user, at: at).accepted)
        #expect(try verify(b, s, c, user, at: at).reason == .replayed)
        // In process, two runtimes do not share: that is what the redis state is for.
        let m1 = try #require(try service("{}")), m2 = try #require(try service("{}"))
        #expect(try verify(m1, s, c, user, at: at).accepted)
        #expect(try verify(m2, s, c, user, at: at).accepted)
    }

    @Test(arguments: TestStores.kinds) func concurrentVerificationsAcceptOnce(kind: TestStore) throws {
        guard let t = try service(kind, #"{"throttle": {"max_failures": 100}}"#) else { return }
        let s = try secret()
        let user = uniqueUser("race")
        let at: Int64 = 1_760_000_000
        let c = try code(t, s, at: at)
        let accepted = Atomic<Int>(0)
        let replayed = Atomic<Int>(0)
        DispatchQueue.concurrentPerform(iterations: 16) { _ in
            let d = try? verify(t, s, c, user, at: at)
            if d?.reason == .ok { accepted.add(1, ordering: .relaxed) }
            if d?.reason == .replayed { replayed.add(1, ordering: .relaxed) }
        }
        #expect(accepted.load(ordering: .relaxed) == 1, "\(kind)")
        #expect(replayed.load(ordering: .relaxed) == 15, "\(kind)")
    }

    func throttleScenario(_ t: TOTPService) throws {
        let s = try secret()
        let user = uniqueUser("throttle")
        let at: Int64 = 1_770_000_000
        let wrong = try wrongCode(t, s, at: at)
        for i in 0..<3 { #expect(try verify(t, s, wrong, user, at: at + Int64(i)).reason == .wrongCode) }
        // Throttled: refused with the time left in the window, even with the right code.
        let d = try verify(t, s, try code(t, s, at: at + 10), user, at: at + 10)
        #expect(d == OTPDecision(.throttled, retryAfter: 90))
        #expect(try verify(t, s, wrong, user, at: at + 99).retryAfter == 1)
        // Malformed codes are refused as such and not counted... but the user is still throttled.
        #expect(try verify(t, s, "abc", user, at: at + 50).reason == .malformedCode)
        // The window ends at start + 100.
        let c = try code(t, s, at: at + 100)
        #expect(try verify(t, s, c, user, at: at + 100).accepted)
        // A success reset the count: two failures are allowed again.
        let wrong2 = try wrongCode(t, s, at: at + 130)
        #expect(try verify(t, s, wrong2, user, at: at + 130).reason == .wrongCode)
        #expect(try verify(t, s, wrong2, user, at: at + 131).reason == .wrongCode)
        // Replays count as failures.
        #expect(try verify(t, s, c, user, at: at + 132).reason == .replayed)
        #expect(try verify(t, s, wrong2, user, at: at + 133).reason == .throttled)
        // Other users are not affected.
        #expect(try verify(t, s, try code(t, s, at: at + 133), user + "-x", at: at + 133).accepted)
    }

    @Test(arguments: TestStores.kinds) func throttle(kind: TestStore) throws {
        guard let t = try service(kind, #"{"throttle": {"max_failures": 3, "window_s": 100}}"#) else { return }
        try throttleScenario(t)
    }

    @Test func defaultThrottleIsFivePerFiveMinutes() throws {
        let t = try #require(try service("{}"))
        #expect(t.throttlePolicy == FailureWindowPolicy(maxFailures: 5, windowSeconds: 300, blockSeconds: 300,
                                                        failurePolicy: .deny, blockAnchor: .oldestFailure))
        let s = try secret()
        let user = uniqueUser("default")
        let at: Int64 = 1_780_000_000
        let wrong = try wrongCode(t, s, at: at)
        for _ in 0..<5 { #expect(try verify(t, s, wrong, user, at: at).reason == .wrongCode) }
        #expect(try verify(t, s, wrong, user, at: at + 1).retryAfter == 299)
    }

    @Test func shortSecretsAndConfiguredParameters() throws {
        let t = try #require(try service(#"{"algorithm": "SHA256", "digits": 8, "period": 60, "t0": 100, "window": 0, "min_secret_bits": 128}"#))
        let s80 = text(Base32.encode([UInt8](repeating: 1, count: 10)))
        expectError(.invalidArgument, "shorter") { _ = try verify(t, s80, "12345678", "u", at: 1_700_000_000) }
        let s = try secret()
        let at: Int64 = 1_700_000_000
        let c = try code(t, s, at: at)
        #expect(c.count == 8)
        let expected = try raw(s) { try OTP.totp(secret: $0, params: OTPParameters(algorithm: .sha256, digits: 8, period: 60, t0: 100), at: at) }
        #expect(c == text(expected))
        #expect(try verify(t, s, c, uniqueUser("p"), at: at).step == (at - 100) / 60)
        #expect(try verify(t, s, String(c.prefix(6)), uniqueUser("p"), at: at).reason == .malformedCode)
        // window 0: the previous step's code is wrong.
        let prev = try code(t, s, at: at - 60)
        #expect(try verify(t, s, prev, uniqueUser("p"), at: at).reason == .wrongCode)
    }

    @Test func configurationErrors() throws {
        expectError(.config, "totp.state") { _ = try Runtime.open(config: #"{"totp": {"state": "redis"}}"#) }
        expectError(.config, "totp.digits") { _ = try Runtime.open(config: #"{"totp": {"digits": 9}}"#) }
        expectError(.config, "totp.window") { _ = try Runtime.open(config: #"{"totp": {"window": 11}}"#) }
        expectError(.config, "algorithm") { _ = try Runtime.open(config: #"{"totp": {"algorithm": "MD5"}}"#) }
        expectError(.config, "totp.throttle.max_failure") { _ = try Runtime.open(config: #"{"totp": {"throttle": {"max_failure": 3}}}"#) }
        expectError(.config, "issuer") { _ = try Runtime.open(config: #"{"totp": {"issuer": "a:b"}}"#) }
        expectError(.config, "inline") { _ = try Runtime.open(config: #"{"totp": {"backup_codes": {"pepper": {"value": "0123456789abcdef"}}}}"#) }
        let rt = try Runtime.open(config: #"{"totp": {"issuer": "Bitcorp ERP"}}"#)
        #expect(rt.describe()["sections"]?["totp"]?["issuer"]?.stringValue == "Bitcorp ERP")
        #expect(rt.describe()["sections"]?["totp"]?["store"]?.stringValue == "process")
    }

    @Test func auditEvents() throws {
        let hook = RecordingHook()
        let t = try #require(try service(#"{"throttle": {"max_failures": 2}}"#, hook: hook))
        let s = try secret()
        let at: Int64 = 1_790_000_000
        let c = try code(t, s, at: at)
        let wrong = try wrongCode(t, s, at: at)
        _ = try verify(t, s, c, "eve", at: at)
        _ = try verify(t, s, c, "eve", at: at)
        _ = try verify(t, s, "12", "eve", at: at)
        _ = try verify(t, s, wrong, "eve", at: at)
        _ = try verify(t, s, wrong, "eve", at: at)
        #expect(hook.recorded == ["mfa/totp_replayed/replayed/eve", "mfa/totp_failed/malformed_code/eve",
                                  "mfa/totp_failed/wrong_code/eve", "mfa/throttled/throttled/eve"])
    }
}

@Suite struct BackupCodeTests {
    func verifyBackup(_ t: TOTPService, _ user: String, _ code: String, _ hashes: [String], at: Int64 = 1_800_000_000) throws -> OTPDecision {
        let stored = hashes.joined(separator: "\n")
        return try rawT(code) { (c) throws(BitsecError) -> OTPDecision in try t.verifyBackupCode(c, stored: stored, user: user, at: at) }
    }

    func scenario(_ t: TOTPService) throws {
        let batch = try t.generateBackupCodes(count: nil)
        #expect(batch.codes.count == 10 && batch.hashes.count == 10)
        #expect(Set(batch.codes).count == 10)
        for c in batch.codes { #expect(c.count == 11 && c.split(separator: "-").count == 2) }
        for h in batch.hashes { #expect(h.hasPrefix("bc1$2000$")) }
        let user = uniqueUser("backup")
        // Accepted once, with the index of the hash to delete; typed loosely.
        let typed = batch.codes[4].uppercased().replacingOccurrences("-", " ")
        #expect(try verifyBackup(t, user, typed, batch.hashes) == OTPDecision(.ok, step: 4))
        #expect(try verifyBackup(t, user, batch.codes[4], batch.hashes) == OTPDecision(.replayed, step: 4))
        // After the caller deleted it, it is simply wrong.
        var rest = batch.hashes
        rest.remove(at: 4)
        #expect(try verifyBackup(t, user, batch.codes[4], rest).reason == .wrongCode)
        #expect(try verifyBackup(t, user, batch.codes[9], rest) == OTPDecision(.ok, step: 8))
        #expect(try verifyBackup(t, user, "not a code!", rest).reason == .malformedCode)
        #expect(try verifyBackup(t, user, "abc", rest).reason == .malformedCode)
        // Hashes of another batch do not match.
        let other = try t.generateBackupCodes(count: 2)
        #expect(try verifyBackup(t, user, other.codes[0], batch.hashes).reason == .wrongCode)
        expectError(.malformed, "stored backup code hash 1") { _ = try verifyBackup(t, user, batch.codes[0], [batch.hashes[0], "bc1$x"]) }
        expectError(.invalidArgument) { _ = try verifyBackup(t, "", batch.codes[0], batch.hashes) }
        // Every hash deleted: a code is simply wrong.
        #expect(try verifyBackup(t, user, batch.codes[0], []).reason == .wrongCode)
    }

    @Test(arguments: TestStores.kinds) func singleUse(kind: TestStore) throws {
        guard let t = try service(kind, #"{"backup_codes": {"iterations": 2000}}"#) else { return }
        try scenario(t)
    }

    @Test func throughRedisAcrossRuntimes() throws {
        guard let a = try service(#"{"state": "redis", "backup_codes": {"iterations": 2000}}"#, redis: true),
              let b = try service(#"{"state": "redis", "backup_codes": {"iterations": 2000}}"#, redis: true) else { return }
        try scenario(a)
        let batch = try a.generateBackupCodes(count: 3)
        let user = uniqueUser("backup-shared")
        #expect(try verifyBackup(a, user, batch.codes[1], batch.hashes).accepted)
        #expect(try verifyBackup(b, user, batch.codes[1], batch.hashes).reason == .replayed)
    }

    /// An attempt that ends in an error decided nothing, so it is not left counted: the
    /// attempt is reserved before the code is looked at, and given back when a later step
    /// fails (here a stored hash that does not parse). Three errors with a limit of two, and
    /// the right code is still accepted.
    @Test(arguments: TestStores.kinds) func anErrorAfterTheReservationIsNotAFailure(kind: TestStore) throws {
        guard let t = try service(kind, #"{"backup_codes": {"iterations": 1000}, "throttle": {"max_failures": 2}}"#) else { return }
        let batch = try t.generateBackupCodes(count: 2)
        let user = uniqueUser("backup-error")
        for _ in 0..<3 {
            expectError(.malformed, "stored backup code hash 1") { _ = try verifyBackup(t, user, batch.codes[0], [batch.hashes[1], "bc1$x"]) }
        }
        #expect(try verifyBackup(t, user, batch.codes[0], batch.hashes).accepted, "\(kind)")
    }

    /// A guess is counted before its code is looked at, so guesses sent at once never get past
    /// the throttle. Counted after the code check (the defect this fixed), every request in
    /// flight passed the check and had its code evaluated: here, with one attempt left,
    /// sixteen arrive at once (released together, each code a slow PBKDF2 match), one of them
    /// right. Before, the right one was accepted although the user was blocked by then, and a
    /// wrong one was reported too: two evaluated where one attempt was left. Now exactly one
    /// attempt is evaluated (the right one or a wrong one) and the others are throttled.
    @Test(arguments: TestStores.kinds) func guessesAtOnceNeverGetPastTheThrottle(kind: TestStore) throws {
        guard let t = try service(kind, #"{"backup_codes": {"iterations": 20000}, "throttle": {"max_failures": 3}}"#) else { return }
        let batch = try t.generateBackupCodes(count: 2)
        let wrongCode = try t.generateBackupCodes(count: 1).codes[0]
        let user = uniqueUser("guess-race")
        for _ in 0..<2 { #expect(try verifyBackup(t, user, wrongCode, batch.hashes).reason == .wrongCode) }
        let right = Int.random(in: 0..<16)
        let ready = Atomic<Int>(0), accepted = Atomic<Int>(0), wrong = Atomic<Int>(0), throttled = Atomic<Int>(0)
        let me = self
        let threads = ThreadBox(count: 16) { i in
            ready.add(1, ordering: .acquiringAndReleasing)
            while ready.load(ordering: .acquiring) < 16 { sched_yield() }
            let d = try? me.verifyBackup(t, user, i == right ? batch.codes[0] : wrongCode, batch.hashes)
            if d?.accepted == true { accepted.add(1, ordering: .relaxed) }
            if d?.reason == .wrongCode { wrong.add(1, ordering: .relaxed) }
            if d?.reason == .throttled { throttled.add(1, ordering: .relaxed) }
        }
        threads.join()
        let a = accepted.load(ordering: .relaxed), w = wrong.load(ordering: .relaxed)
        #expect(a + w == 1, "\(kind): \(a) accepted and \(w) wrong codes evaluated with one attempt left")
        #expect(throttled.load(ordering: .relaxed) == 15, "\(kind)")
    }

    @Test(arguments: TestStores.kinds) func concurrentUseSucceedsOnce(kind: TestStore) throws {
        guard let t = try service(kind, #"{"backup_codes": {"iterations": 1000}, "throttle": {"max_failures": 100}}"#) else { return }
        let batch = try t.generateBackupCodes(count: 3)
        let user = uniqueUser("backup-race")
        let accepted = Atomic<Int>(0)
        DispatchQueue.concurrentPerform(iterations: 8) { _ in
            if (try? verifyBackup(t, user, batch.codes[0], batch.hashes))?.accepted == true { accepted.add(1, ordering: .relaxed) }
        }
        #expect(accepted.load(ordering: .relaxed) == 1)
    }

    @Test func pepperedHashesNeedThePepper() throws {
        setenv("BITSEC_TEST_TOTP_PEPPER", "a pepper of at least sixteen bytes", 1)
        let t = try #require(try service(#"{"backup_codes": {"iterations": 1000, "pepper": {"env": "BITSEC_TEST_TOTP_PEPPER"}}}"#))
        let batch = try t.generateBackupCodes(count: 2)
        #expect(batch.hashes.allSatisfy { $0.hasPrefix("bc1p$1000$") })
        #expect(try verifyBackup(t, uniqueUser("pep"), batch.codes[1], batch.hashes).accepted)
        let plain = try #require(try service(#"{"backup_codes": {"iterations": 1000}}"#))
        expectError(.config, "pepper") { _ = try verifyBackup(plain, uniqueUser("pep"), batch.codes[1], batch.hashes) }
    }

    @Test func failuresAreThrottled() throws {
        let t = try #require(try service(#"{"backup_codes": {"iterations": 1000}, "throttle": {"max_failures": 2, "window_s": 60}}"#))
        let batch = try t.generateBackupCodes(count: 2)
        let other = try t.generateBackupCodes(count: 1)
        let user = uniqueUser("backup-throttle")
        #expect(try verifyBackup(t, user, other.codes[0], batch.hashes, at: 1000).reason == .wrongCode)
        #expect(try verifyBackup(t, user, other.codes[0], batch.hashes, at: 1001).reason == .wrongCode)
        #expect(try verifyBackup(t, user, batch.codes[0], batch.hashes, at: 1002) == OTPDecision(.throttled, retryAfter: 58))
        #expect(try verifyBackup(t, user, batch.codes[0], batch.hashes, at: 1060).accepted)
    }
}

private extension String {
    func replacingOccurrences(_ a: Character, _ b: Character) -> String { String(map { $0 == a ? b : $0 }) }
}

@Suite struct InProcessTableTests {
    // A full table used to be pruned on every insert (O(n) per failure once it held 100k
    // windows); now expired entries go when it reaches a threshold that then doubles.
    @Test func throttleTablePrunesExpiredWindows() throws {
        // TOTP's throttle is now the rate limiter's FailureWindow (bounded sharded table).
        let t = FailureWindow(name: "totp", policy: TOTPService.throttlePolicy(maxFailures: 5, windowSeconds: 10),
                              redis: nil, audit: nil, maxKeys: 10_000)
        for i in 0..<12_000 { _ = try t.recordFailure(key: "old-\(i)", at: 1_000) }
        // Later failures: the old windows are over and get pruned at the threshold.
        for i in 0..<9_000 { _ = try t.recordFailure(key: "new-\(i)", at: 2_000) }
        #expect(t.trackedKeys < 12_000)
        let n = try t.check(key: "new-1", at: 2_000)
        #expect(!n.blocked && n.failures == 1)
        let o = try t.check(key: "old-1", at: 1_005)
        #expect(!o.blocked && o.failures == 0)  // pruned: forgotten
    }

    @Test func replayTablePrunesExpiredEntries() {
        let g = InProcessReplayGuard()
        for i in 0..<25_000 { #expect(g.accept("u\(i)", step: 1, ttlSeconds: 0)) }
        #expect(g.trackedUsers < 10_001)
        let live = InProcessReplayGuard()
        for i in 0..<100 { _ = live.accept("u\(i)", step: 5, ttlSeconds: 3600) }
        #expect(!live.accept("u7", step: 5, ttlSeconds: 3600))
        #expect(!live.accept("u7", step: 4, ttlSeconds: 3600))
        #expect(live.accept("u7", step: 6, ttlSeconds: 3600))
    }

    @Test func useOnceSetClaimsOnce() {
        let s = InProcessUseOnceSet()
        #expect(s.claim("a", ttlSeconds: 60))
        #expect(!s.claim("a", ttlSeconds: 60))
        #expect(s.claim("b", ttlSeconds: 60))
    }
}

// MARK: - FailureWindow's block anchor (the extension TOTP needs)

private func redisPool() throws -> RedisPool? {
    guard let port = TestRedis.port else { return nil }
    let o = try ConfigObject(try JSONReader.parse(#"{"host": "127.0.0.1", "port": \#(port), "command_timeout_ms": 1000}"#), path: "redis")
    return RedisPool(config: try RedisConfig.read(o, context: ConfigContext(allowInlineSecrets: true)))
}

@Suite struct FailureWindowAnchorTests {
    func scenario(_ redis: RedisPool?) throws {
        let oldest = FailureWindow(name: "anchor-o", policy: FailureWindowPolicy(maxFailures: 3, windowSeconds: 100, blockSeconds: 100,
                                                                                 blockAnchor: .oldestFailure), redis: redis, audit: nil)
        let last = FailureWindow(name: "anchor-l", policy: FailureWindowPolicy(maxFailures: 3, windowSeconds: 100, blockSeconds: 100),
                                 redis: redis, audit: nil)
        let key = uniqueUser("anchor")
        let at: Int64 = 1_700_000_000
        for w in [oldest, last] {
            #expect(try !w.recordFailure(key: key, at: at).blocked)
            #expect(try !w.recordFailure(key: key, at: at + 10).blocked)
            let s = try w.recordFailure(key: key, at: at + 20)
            #expect(s.blocked && s.newlyBlocked)
        }
        // Oldest failure anchor: blocked until at + 100; the default: until at + 20 + 100.
        #expect(try oldest.check(key: key, at: at + 50).retryAfter == 50)
        #expect(try last.check(key: key, at: at + 50).retryAfter == 70)
        #expect(try oldest.check(key: key, at: at + 99).retryAfter == 1)
        #expect(try !oldest.check(key: key, at: at + 100).blocked)
        #expect(try last.check(key: key, at: at + 100).blocked)
        // Only the failures still in the window count: at + 100 the one at `at` has left it.
        let k2 = key + "-2"
        _ = try oldest.recordFailure(key: k2, at: at)
        _ = try oldest.recordFailure(key: k2, at: at + 90)
        #expect(try !oldest.recordFailure(key: k2, at: at + 100).blocked)
        let b = try oldest.recordFailure(key: k2, at: at + 120)
        #expect(b.blocked && b.retryAfter == 70)  // from the failure at + 90
        // A block shorter than the window still starts (at least 1 s).
        let short = FailureWindow(name: "anchor-s", policy: FailureWindowPolicy(maxFailures: 2, windowSeconds: 100, blockSeconds: 5,
                                                                                blockAnchor: .oldestFailure), redis: redis, audit: nil)
        _ = try short.recordFailure(key: key, at: at)
        let s = try short.recordFailure(key: key, at: at + 50)
        #expect(s.blocked && s.retryAfter == 1)
    }

    @Test func inProcess() throws { try scenario(nil) }

    @Test func throughRedis() throws {
        guard let pool = try redisPool() else { return }
        try scenario(pool)
    }
}

// MARK: - Redis outage: an error, never an acceptance

@Suite struct TOTPOutageTests {
    @Test func unreachableRedisIsAnErrorForEveryPath() throws {
        // Nothing listens on port 1.
        let rt = try Runtime.open(config: #"{"redis": {"host": "127.0.0.1", "port": 1, "connect_timeout_ms": 200, "command_timeout_ms": 200}, "totp": {"state": "redis", "backup_codes": {"iterations": 1000}}}"#)
        let t = try #require(rt.totp)
        let s = try secret()
        let at: Int64 = 1_760_000_000
        let c = try code(t, s, at: at)
        for _ in 0..<3 {
            expectError(.backendUnavailable) { _ = try verify(t, s, c, "outage", at: at) }
        }
        let batch = try t.generateBackupCodes(count: 1)
        expectError(.backendUnavailable) {
            _ = try rawT(batch.codes[0]) { (p) throws(BitsecError) -> OTPDecision in
                try t.verifyBackupCode(p, stored: batch.hashes[0], user: "outage", at: at)
            }
        }
        // Malformed codes are still decided (nothing is counted, nothing needs Redis).
        #expect(try verify(t, s, "12", "outage", at: at).reason == .malformedCode)
    }
}

// MARK: - Sealed secrets (field encryption)

private func sealedService(_ totp: String = "{}", redis: Bool = false, fields: Bool = true, hook: (any AuditHook)? = nil) throws -> TOTPService? {
    var pool: RedisPool? = nil
    if redis {
        guard let p = try redisPool() else { return nil }
        pool = p
    }
    let ctx = ConfigContext(allowInlineSecrets: true)
    let fs = fields ? try makeFields(fieldsSection(), audit: hook) : nil
    let o = try ConfigObject(try JSONReader.parse(totp), path: "totp")
    return try TOTPService.read(o, context: CapabilityContext(config: ctx, redis: pool, audit: hook, fields: fs))
}

private func seal(_ t: TOTPService, _ s: String, _ user: String) throws -> String {
    text(try rawT(s) { (p) throws(BitsecError) -> [UInt8] in try t.sealSecret(p, user: user) })
}

private func verifySealed(_ t: TOTPService, _ sealed: String, _ code: String, _ user: String, at: Int64) throws -> OTPDecision {
    try rawT(sealed) { (sp) throws(BitsecError) -> OTPDecision in
        try rawT(code) { (cp) throws(BitsecError) -> OTPDecision in try t.verifySealed(sealed: sp, code: cp, user: user, at: at) }
    }
}

@Suite struct SealedSecretTests {
    @Test func roundTripAndContextBinding() throws {
        let t = try #require(try sealedService())
        let s = try secret()
        let user = uniqueUser("sealed")
        let sealed = try seal(t, s.lowercased(), user)  // normalised (upper case) before sealing
        #expect(sealed.utf8.count <= TOTPService.maxSealedSecretBytes)
        #expect(!sealed.contains(s))
        #expect(try seal(t, s, user) != sealed)  // randomised
        // The documented context opens it with the field API: the normalised base32 secret.
        let fs = try makeFields(fieldsSection())
        let (r, plain) = try fs.open(Array(sealed.utf8), "bitsec.totp.secret|" + user)
        #expect(r == .ok && text(plain) == s)
        let at: Int64 = 1_750_000_000
        let c = try code(t, s, at: at)
        #expect(try verifySealed(t, sealed, c, user, at: at) == OTPDecision(.ok, step: at / 30))
        // Another user: an error naming the context, not a decision.
        expectError(.malformed, "wrong_context") { _ = try verifySealed(t, sealed, c, user + "-x", at: at) }
        // Tampered: an error too.
        var bytes = Array(sealed.utf8)
        bytes[bytes.count / 2] = bytes[bytes.count / 2] == UInt8(ascii: "A") ? UInt8(ascii: "B") : UInt8(ascii: "A")
        expectError(.malformed) { _ = try verifySealed(t, text(bytes), c, user, at: at) }
        expectError(.malformed) { _ = try verifySealed(t, "not a sealed secret", c, user, at: at) }
        expectError(.tooLarge) { _ = try verifySealed(t, String(repeating: "A", count: 513), c, user, at: at) }
        // Sealing checks the secret like verify does.
        expectError(.malformed) { _ = try seal(t, "not base32!", user) }
        expectError(.invalidArgument, "shorter") { _ = try seal(t, text(Base32.encode([UInt8](repeating: 1, count: 8))), user) }
        expectError(.invalidArgument, "user") { _ = try seal(t, s, "") }
    }

    @Test func notConfiguredWithoutFields() throws {
        let t = try #require(try sealedService(fields: false))
        expectError(.notConfigured, "fields section") { _ = try seal(t, try secret(), "u") }
        expectError(.notConfigured, "fields section") { _ = try verifySealed(t, "x", "123456", "u", at: 1_700_000_000) }
        #expect(t.describe()["sealed_secrets"]?.boolValue == false)
        let rt = try Runtime.open(config: #"{"totp": {}}"#)
        #expect(rt.totp?.describe()["sealed_secrets"]?.boolValue == false)
    }

    func replayAndThrottle(_ t: TOTPService) throws {
        let s = try secret()
        let user = uniqueUser("sealed-state")
        let sealed = try seal(t, s, user)
        let at: Int64 = 1_770_000_000
        let c = try code(t, s, at: at)
        #expect(try verifySealed(t, sealed, c, user, at: at).accepted)
        // Replay: through the sealed path and through the plain one (one state per user).
        #expect(try verifySealed(t, sealed, c, user, at: at).reason == .replayed)
        #expect(try verify(t, s, c, user, at: at).reason == .replayed)
        // Throttle (max 3 in 100 s): the replays counted two failures; one wrong code more.
        let wrong = try wrongCode(t, s, at: at + 1)
        #expect(try verifySealed(t, sealed, wrong, user, at: at + 1).reason == .wrongCode)
        let next = try code(t, s, at: at + 30)
        #expect(try verifySealed(t, sealed, next, user, at: at + 30) == OTPDecision(.throttled, retryAfter: 70))
        #expect(try verifySealed(t, sealed, "abc", user, at: at + 30).reason == .malformedCode)
        // A sealed secret that does not open is an error and not counted.
        expectError(.malformed) { _ = try verifySealed(t, "garbage", next, user, at: at + 30) }
        #expect(try verifySealed(t, sealed, try code(t, s, at: at + 100), user, at: at + 100).accepted)
    }

    @Test func replayAndThrottleInProcess() throws {
        try replayAndThrottle(try #require(try sealedService(#"{"throttle": {"max_failures": 3, "window_s": 100}}"#)))
    }

    @Test func replayAndThrottleThroughRedis() throws {
        guard let t = try sealedService(#"{"state": "redis", "throttle": {"max_failures": 3, "window_s": 100}}"#, redis: true) else { return }
        try replayAndThrottle(t)
    }

    @Test func auditEventsThroughTheSealedPath() throws {
        let hook = RecordingHook()
        let t = try #require(try sealedService(#"{"throttle": {"max_failures": 2}}"#, hook: hook))
        let s = try secret()
        let sealed = try seal(t, s, "mallory")
        let at: Int64 = 1_790_000_000
        let c = try code(t, s, at: at)
        let wrong = try wrongCode(t, s, at: at)
        _ = try verifySealed(t, sealed, c, "mallory", at: at)
        _ = try verifySealed(t, sealed, c, "mallory", at: at)
        _ = try verifySealed(t, sealed, "12", "mallory", at: at)
        _ = try verifySealed(t, sealed, wrong, "mallory", at: at)
        _ = try verifySealed(t, sealed, wrong, "mallory", at: at)
        #expect(hook.recorded == ["mfa/totp_replayed/replayed/mallory", "mfa/totp_failed/malformed_code/mallory",
                                  "mfa/totp_failed/wrong_code/mallory", "mfa/throttled/throttled/mallory"])
        // A secret sealed for mallory, presented for trudy: the field service audits the failure.
        expectError(.malformed) { _ = try verifySealed(t, sealed, c, "trudy", at: at) }
        #expect(hook.recorded.count == 5)
        #expect(hook.recorded.last == "data_access/decrypt_failed/wrong_context/-")
    }
}
