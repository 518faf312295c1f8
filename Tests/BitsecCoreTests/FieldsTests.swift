// The fields capability through its public core API: Fernet's generate vector byte for byte,
// audit events of failures and reloads, sizes and buffers, and reloads under concurrency.
import Testing
import Glibc
import Dispatch
import BitsecCore
import Synchronization

/// Collects automatic audit events (the audit capability's role in production).
private final class RecordingHook: AuditHook, @unchecked Sendable {
    private var lock = pthread_mutex_t()
    private var _events: [AutomaticAuditEvent] = []
    init() { pthread_mutex_init(&lock, nil) }
    var automaticEventsEnabled: Bool { true }
    func emitAutomatic(_ event: AutomaticAuditEvent) {
        pthread_mutex_lock(&lock); _events.append(event); pthread_mutex_unlock(&lock)
    }
    var events: [AutomaticAuditEvent] {
        pthread_mutex_lock(&lock); defer { pthread_mutex_unlock(&lock) }
        return _events
    }
}

let fieldKeyHex = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
let fieldKey2Hex = "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f"

func fieldsSection(primary: String = "k1", extra: String = "") -> String {
    #"{"keys": [{"id": "k1", "secret": {"value": "\#(fieldKeyHex)", "encoding": "hex"}}, {"id": "k2", "secret": {"value": "\#(fieldKey2Hex)", "encoding": "hex"}}], "primary": "\#(primary)"\#(extra)}"#
}

func makeFields(_ section: String, audit: (any AuditHook)? = nil) throws -> FieldService {
    let o = try ConfigObject(try JSONReader.parse(section), path: "fields")
    return try FieldService.read(o, context: CapabilityContext(config: ConfigContext(allowInlineSecrets: true), redis: nil, audit: audit))
}

extension FieldService {
    /// Encrypts into a fresh array (test convenience).
    func seal(_ pt: [UInt8], _ ctx: String, _ flags: FieldFlags = []) throws -> [UInt8] {
        let c = Array(ctx.utf8)
        var out = [UInt8](repeating: 0, count: FieldFormat.bound(plaintext: pt.count, flags: flags))
        let n = try pt.withUnsafeBytes { p in try c.withUnsafeBytes { cc in
            try out.withUnsafeMutableBytes { o in try encrypt(p, context: cc, flags: flags, into: o) } } }
        return Array(out[0..<n])
    }

    func open(_ token: [UInt8], _ ctx: String) throws -> (FieldReason, [UInt8]) {
        let c = Array(ctx.utf8)
        var out = [UInt8](repeating: 0, count: token.count)
        let o = try token.withUnsafeBytes { t in try c.withUnsafeBytes { cc in
            try out.withUnsafeMutableBytes { ob in try decrypt(t, context: cc, into: ob) } } }
        return (o.reason, o.reason == .ok ? Array(out[0..<o.length]) : [])
    }
}

@Suite struct FieldCoreTests {
    @Test func fernetGenerateVectorByteForByte() throws {
        // tests/vectors/fernet/generate.json: fixed IV 0...15 at 1985-10-26T01:20:00-07:00.
        let key = Base64.decodeLenient(Array("cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4=".utf8), urlSafe: true) ?? []
        let f = try FernetKeyring(secrets: [SecretBytes(key)])
        let token = try Array("hello".utf8).withUnsafeBytes { p in try f.encrypt(p, timestamp: 499_162_800, iv: Array(0..<16)) }
        #expect(String(decoding: token, as: UTF8.self)
                == "gAAAAAAdwJ6wAAECAwQFBgcICQoLDA0ODy021cpGVWKZ_eEwCGM4BLLF_5CV9dOPmrhuVUPgJobwOz7JcbmrR64jVmpU4IwqDA==")
        let opened = try token.withUnsafeBytes { t in try f.decrypt(t, ttl: 60, now: 499_162_801) }
        #expect(opened.reason == .ok && opened.plaintext == Array("hello".utf8) && opened.timestamp == 499_162_800)
    }

    /// An optional TTL where every value is a limit, as cryptography's: ttl 0 accepts the
    /// token's own second only; nil checks neither age nor future.
    @Test func fernetTimeToLiveZeroIsALimit() throws {
        let key = Base64.decodeLenient(Array("cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4=".utf8), urlSafe: true) ?? []
        let f = try FernetKeyring(secrets: [SecretBytes(key)])
        let token = try Array("v".utf8).withUnsafeBytes { p in try f.encrypt(p, timestamp: 1_000_000) }
        func open(_ ttl: Int64?, _ now: Int64) throws -> FieldReason {
            try token.withUnsafeBytes { t in try f.decrypt(t, timeToLive: ttl, now: now) }.reason
        }
        #expect(try open(0, 1_000_000) == .ok)
        #expect(try open(0, 1_000_001) == .expired)
        #expect(try open(0, 999_940) == .ok)
        #expect(try open(0, 999_939) == .notYetValid)
        #expect(try open(5, 1_000_005) == .ok)
        #expect(try open(5, 1_000_006) == .expired)
        #expect(try open(nil, 9_000_000) == .ok)
        #expect(try open(nil, 1) == .ok)
        #expect(throws: BitsecError.self) { try open(-1, 1_000_000) }
        // The original entry point keeps 0 = no limit.
        #expect(try token.withUnsafeBytes { t in try f.decrypt(t, ttl: 0, now: 9_000_000) }.reason == .ok)
    }

    @Test func roundTripAndDecisions() throws {
        let fs = try makeFields(fieldsSection(extra: #", "deterministic_contexts": ["t.sn"]"#))
        let tok = try fs.seal(Array("SN-0042".utf8), "t.c|1")
        #expect(try fs.open(tok, "t.c|1") == (.ok, Array("SN-0042".utf8)))
        #expect(try fs.open(tok, "t.c|2").0 == .wrongContext)
        var bad = tok
        bad[bad.count - 1] = bad[bad.count - 1] == 0x41 ? 0x42 : 0x41
        #expect(try fs.open(bad, "t.c|1").0 != .ok)
        #expect(try fs.open([], "c").0 == .malformed)
        let d1 = try fs.seal(Array("x".utf8), "t.sn", .deterministic)
        #expect(d1 == (try fs.seal(Array("x".utf8), "t.sn", .deterministic)))
        expectError(.invalidArgument, "deterministic") { _ = try fs.seal(Array("x".utf8), "t.other", .deterministic) }
        expectError(.invalidArgument, "flags") { _ = try fs.seal([], "c", FieldFlags(rawValue: 8)) }
    }

    @Test func smallBuffersReportTheSizeAndWriteNothing() throws {
        let fs = try makeFields(fieldsSection())
        let pt = Array("value".utf8), c = Array("ctx".utf8)
        var small = [UInt8](repeating: 0xEE, count: 10)
        let n = try pt.withUnsafeBytes { p in try c.withUnsafeBytes { cc in
            try small.withUnsafeMutableBytes { o in try fs.encrypt(p, context: cc, flags: [], into: o) } } }
        #expect(n == FieldFormatTestSupport.textLength(binary: 2 + 2 + 4 + 12 + 5 + 16))
        #expect(small.allSatisfy { $0 == 0xEE })
        let none = try pt.withUnsafeBytes { p in try c.withUnsafeBytes { cc in try fs.encrypt(p, context: cc, flags: .binary, into: nil) } }
        #expect(none == 2 + 2 + 4 + 12 + 5 + 16)
    }

    @Test func failuresAndReloadsAreAudited() throws {
        let hook = RecordingHook()
        let fs = try makeFields(fieldsSection(), audit: hook)
        let tok = try fs.seal(Array("secret plaintext".utf8), "equipment_records.notes|42|tenant-7")
        _ = try fs.open(tok, "equipment_records.notes|43|tenant-7")
        let failed = hook.events.filter { $0.subtype == "decrypt_failed" }
        #expect(failed.count == 1)
        if let e = failed.first {
            #expect(e.type == "data_access" && e.result == "failure" && e.reason == "wrong_context")
            #expect(e.resource == "equipment_records.notes")  // the column, never the row or tenant
            let text = "\(e.details)"
            #expect(!text.contains("42") && !text.contains("tenant") && !text.contains("secret"))
            #expect(text.contains("k1"))
        }
        try Array(fieldsSection(primary: "k2").utf8).withUnsafeBytes { try fs.reload(section: $0) }
        expectError(.config, "unknown field fields.bogus") {
            try Array(#"{"bogus": 1}"#.utf8).withUnsafeBytes { try fs.reload(section: $0) }
        }
        let reloads = hook.events.filter { $0.subtype == "keys_reloaded" }
        #expect(reloads.map(\.result) == ["success", "failure"])
        #expect(reloads.first?.type == "key_management")
        // The failed reload left the keyring alone: k2 is primary, k1 still decrypts.
        #expect(fs.keyring.primary?.id == "k2")
        #expect(try fs.open(tok, "equipment_records.notes|42|tenant-7").0 == .ok)
    }

    @Test func eightThreadsDuringReloads() throws {
        let fs = try makeFields(fieldsSection())
        let failures = Atomic<Int>(0)
        let done = Atomic<Int>(0)
        DispatchQueue.concurrentPerform(iterations: 9) { worker in
            if worker == 8 {
                var k = 0
                while done.load(ordering: .relaxed) < 8 {
                    let section = Array(fieldsSection(primary: k % 2 == 0 ? "k2" : "k1").utf8)
                    do { try section.withUnsafeBytes { try fs.reload(section: $0) } } catch { failures.add(1, ordering: .relaxed) }
                    k += 1
                }
                return
            }
            for i in 0..<300 {
                let ctx = "t.c|\(worker)|\(i)"
                let pt = Array("v\(worker)-\(i)".utf8)
                do {
                    let tok = try fs.seal(pt, ctx, i % 3 == 0 ? .binary : [])
                    let (r, back) = try fs.open(tok, ctx)
                    if r != .ok || back != pt { failures.add(1, ordering: .relaxed) }
                } catch {
                    failures.add(1, ordering: .relaxed)
                }
            }
            done.add(1, ordering: .relaxed)
        }
        #expect(failures.load(ordering: .relaxed) == 0)
    }

    @Test func configurationErrorsNameTheField() {
        expectError(.config, "fields.keys[0].secret: a field key needs at least 32 bytes") {
            _ = try makeFields(#"{"keys": [{"id": "a", "secret": {"value": "short"}}]}"#)
        }
        expectError(.config, "fields.primary: key a is retired") {
            _ = try makeFields(#"{"keys": [{"id": "a", "secret": {"value": "\#(fieldKeyHex)", "encoding": "hex"}, "status": "retired"}], "primary": "a"}"#)
        }
        expectError(.config, "fields.master is set but no key has derive_from_master") {
            _ = try makeFields(#"{"master": {"value": "\#(fieldKeyHex)", "encoding": "hex"}, "keys": [{"id": "a", "secret": {"value": "\#(fieldKeyHex)", "encoding": "hex"}}]}"#)
        }
        expectError(.config, "needs keys") { _ = try makeFields("{}") }
        expectError(.config, "fields.keys[0] must have exactly one of secret, derive_from_master") {
            _ = try makeFields(#"{"keys": [{"id": "a"}]}"#)
        }
    }
}

enum FieldFormatTestSupport {
    static func textLength(binary n: Int) -> Int { (n / 3) * 4 + [0, 2, 3][n % 3] }
}
