// Field encryption through the exported C functions only: decisions vs errors, buffer
// sizes, NULL and oversized arguments, closed handles, reload, Fernet.
import Testing
import Glibc
import Bitsec

private let FIELD_BINARY = BitsecABI.BITSEC_FIELD_BINARY, FIELD_DETERMINISTIC = BitsecABI.BITSEC_FIELD_DETERMINISTIC
private let R_OK = BitsecABI.BITSEC_FIELD_REASON_OK, R_MALFORMED = BitsecABI.BITSEC_FIELD_REASON_MALFORMED, R_TAMPERED = BitsecABI.BITSEC_FIELD_REASON_TAMPERED, R_WRONG_CONTEXT = BitsecABI.BITSEC_FIELD_REASON_WRONG_CONTEXT
private let R_UNKNOWN_KEY = BitsecABI.BITSEC_FIELD_REASON_UNKNOWN_KEY, R_RETIRED_KEY = BitsecABI.BITSEC_FIELD_REASON_RETIRED_KEY, R_EXPIRED = BitsecABI.BITSEC_FIELD_REASON_EXPIRED
private let E_UNSUPPORTED_UNUSED = BitsecABI.BITSEC_E_UNSUPPORTED

private let k1 = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
private let k2 = "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f"
private let fernetKey = "cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4="

private func section(primary: String = "k1", k1Status: String = "active") -> String {
    #"{"keys": [{"id": "k1", "secret": {"value": "\#(k1)", "encoding": "hex"}, "status": "\#(k1Status)"}, {"id": "k2", "secret": {"value": "\#(k2)", "encoding": "hex"}}], "primary": "\#(primary)", "deterministic_contexts": ["t.sn"], "fernet": {"keys": [{"value": "\#(fernetKey)", "encoding": "base64url"}]}}"#
}

private func openFields() -> OpaquePointer? {
    let (rc, rt) = open(#"{"allow_inline_secrets": true, "fields": \#(section())}"#)
    #expect(rc == OK, "\(lastError())")
    return rt
}

private func encrypt(_ rt: OpaquePointer?, _ pt: String, _ ctx: String, _ flags: UInt32 = 0) -> (Int32, [UInt8]) {
    var out = [CChar](repeating: 0, count: Int(bitsec_field_bound(UInt(pt.utf8.count), flags)) + 1)
    var n: UInt = 0
    let p = Array(pt.utf8), c = Array(ctx.utf8)
    let rc = bitsec_encrypt_field(rt, p, UInt(p.count), c.map { CChar(bitPattern: $0) }, UInt(c.count), flags, &out, UInt(out.count), &n)
    return (rc, out.prefix(Int(n)).map { UInt8(bitPattern: $0) })
}

private func decrypt(_ rt: OpaquePointer?, _ tok: [UInt8], _ ctx: String) -> (Int32, Int32, String) {
    var out = [UInt8](repeating: 0, count: tok.count + 1)
    var n: UInt = 0
    var reason: Int32 = -1
    let c = Array(ctx.utf8).map { CChar(bitPattern: $0) }
    let rc = bitsec_decrypt_field(rt, tok, UInt(tok.count), c, UInt(c.count), &out, UInt(out.count), &n, &reason)
    return (rc, reason, String(decoding: out.prefix(Int(n)), as: UTF8.self))
}

@Suite struct FieldsABITests {
    @Test func roundTripAndDecisionsAreOK() {
        let rt = openFields()
        defer { bitsec_runtime_close(rt) }
        let (rc, tok) = encrypt(rt, "SN-0042", "equipment_records.serial_number|42|t7")
        #expect(rc == OK)
        #expect(decrypt(rt, tok, "equipment_records.serial_number|42|t7") == (OK, R_OK, "SN-0042"))
        #expect(decrypt(rt, tok, "equipment_records.serial_number|43|t7").1 == R_WRONG_CONTEXT)
        var bad = tok
        bad[bad.count / 2] = bad[bad.count / 2] == 0x41 ? 0x42 : 0x41
        let (brc, breason, bout) = decrypt(rt, bad, "equipment_records.serial_number|42|t7")
        #expect(brc == OK && breason != R_OK && bout.isEmpty)
        #expect(decrypt(rt, Array("not a token".utf8), "c").1 == R_MALFORMED)
        let (_, bin) = encrypt(rt, "", "c", FIELD_BINARY)
        #expect(bin.first == 1 && decrypt(rt, bin, "c") == (OK, R_OK, ""))
        #expect(String(cString: bitsec_field_reason_name(R_WRONG_CONTEXT)) == "wrong_context")
        #expect(String(cString: bitsec_field_reason_name(99)) == "unknown")
    }

    @Test func buffersNullsAndLimits() {
        let rt = openFields()
        defer { bitsec_runtime_close(rt) }
        var n: UInt = 0
        var small = [CChar](repeating: 0, count: 8)
        #expect(bitsec_encrypt_field(rt, [1, 2, 3], 3, "c", 1, 0, &small, 8, &n) == E_BUFFER)
        #expect(n > 8)
        #expect(bitsec_encrypt_field(rt, nil, 0, "c", 1, 0, nil, 0, &n) == E_BUFFER)  // size query
        #expect(bitsec_encrypt_field(rt, nil, 3, "c", 1, 0, &small, 8, &n) == E_INVALID)
        #expect(bitsec_encrypt_field(rt, [1], 1, "c", 1, 0, &small, 8, nil) == E_INVALID)
        #expect(bitsec_encrypt_field(rt, [1], 1, "c", 1, 64, &small, 8, &n) == E_INVALID)
        #expect(bitsec_encrypt_field(rt, [1], UInt.max, "c", 1, 0, &small, 8, &n) == E_TOO_LARGE)
        #expect(bitsec_encrypt_field(rt, [1], 1, "c", 4097, 0, &small, 8, &n) == E_TOO_LARGE)
        #expect(bitsec_encrypt_field(nil, [1], 1, "c", 1, 0, &small, 8, &n) == E_INVALID)
        #expect(bitsec_encrypt_field(rt, [1], 1, "t.other", 7, FIELD_DETERMINISTIC, &small, 8, &n) == E_INVALID)
        let (_, tok) = encrypt(rt, "hello", "c")
        var reason: Int32 = 0
        var out = [UInt8](repeating: 0, count: 2)
        #expect(bitsec_decrypt_field(rt, tok, UInt(tok.count), "c", 1, &out, 2, &n, &reason) == E_BUFFER)
        #expect(n == 5)
        #expect(bitsec_decrypt_field(rt, tok, UInt(tok.count), "c", 1, &out, 2, &n, nil) == E_INVALID)
        #expect(bitsec_decrypt_field(rt, tok, UInt.max, "c", 1, &out, 2, &n, &reason) == E_TOO_LARGE)
        #expect(reason == R_MALFORMED)  // fail closed: set on entry
        #expect(bitsec_field_bound(1 << 20, 0) > 0 && bitsec_field_bound((1 << 20) + 1, 0) == 0)
        #expect(bitsec_field_bound(0, 4) == 0)
    }

    @Test func notConfiguredAndClosed() {
        let (rc, bare) = open("{}")
        #expect(rc == OK)
        var n: UInt = 0
        var out = [CChar](repeating: 0, count: 128)
        #expect(bitsec_encrypt_field(bare, [1], 1, "c", 1, 0, &out, 128, &n) == E_NOT_CONFIGURED)
        bitsec_runtime_close(bare)
        let rt = openFields()
        bitsec_runtime_close(rt)
        #expect(bitsec_encrypt_field(rt, [1], 1, "c", 1, 0, &out, 128, &n) == E_CLOSED)
    }

    @Test func rotationRewrapAndRetirement() {
        let rt = openFields()
        defer { bitsec_runtime_close(rt) }
        let (_, old) = encrypt(rt, "cost 1250", "t.cost|1")
        let s2 = Array(section(primary: "k2").utf8).map { CChar(bitPattern: $0) }
        #expect(bitsec_field_keys_reload(rt, s2, UInt(s2.count)) == OK)
        var out = [CChar](repeating: 0, count: 256)
        var n: UInt = 0, reason: Int32 = -1, rewrapped: Int32 = -1
        #expect(bitsec_field_rewrap(rt, old, UInt(old.count), "t.cost|1", 8, 0, &out, 256, &n, &reason, &rewrapped) == OK)
        #expect(reason == R_OK && rewrapped == 1)
        let moved = out.prefix(Int(n)).map { UInt8(bitPattern: $0) }
        #expect(bitsec_field_rewrap(rt, moved, UInt(moved.count), "t.cost|1", 8, 0, &out, 256, &n, &reason, &rewrapped) == OK)
        #expect(rewrapped == 0 && out.prefix(Int(n)).map { UInt8(bitPattern: $0) } == moved)
        let s3 = Array(section(primary: "k2", k1Status: "retired").utf8).map { CChar(bitPattern: $0) }
        #expect(bitsec_field_keys_reload(rt, s3, UInt(s3.count)) == OK)
        #expect(decrypt(rt, old, "t.cost|1").1 == R_RETIRED_KEY)
        #expect(decrypt(rt, moved, "t.cost|1") == (OK, R_OK, "cost 1250"))
        let bad = Array(#"{"keys": []}"#.utf8).map { CChar(bitPattern: $0) }
        #expect(bitsec_field_keys_reload(rt, bad, UInt(bad.count)) == E_CONFIG)
        #expect(decrypt(rt, moved, "t.cost|1").1 == R_OK)
        // A key id nobody has.
        let (orc, other) = open(#"{"allow_inline_secrets": true, "fields": {"keys": [{"id": "zz", "secret": {"value": "\#(k1)", "encoding": "hex"}}]}}"#)
        #expect(orc == OK)
        let (_, foreign) = encrypt(other, "x", "c")
        bitsec_runtime_close(other)
        #expect(decrypt(rt, foreign, "c").1 == R_UNKNOWN_KEY)
    }

    @Test func fernetDecisions() {
        let rt = openFields()
        defer { bitsec_runtime_close(rt) }
        var tok = [CChar](repeating: 0, count: Int(bitsec_fernet_bound(5)) + 1)
        var n: UInt = 0
        #expect(bitsec_fernet_encrypt(rt, Array("hello".utf8), 5, 1_000_000, &tok, UInt(tok.count), &n) == OK)
        #expect(n == bitsec_fernet_bound(5))
        var out = [UInt8](repeating: 0, count: 64)
        var reason: Int32 = -1
        #expect(bitsec_fernet_decrypt(rt, tok, n, 60, 1_000_030, &out, 64, &n, &reason) == OK)
        #expect(reason == R_OK && String(decoding: out.prefix(Int(n)), as: UTF8.self) == "hello")
        let len = bitsec_fernet_bound(5)
        #expect(bitsec_fernet_decrypt(rt, tok, len, 60, 1_000_061, &out, 64, &n, &reason) == OK)
        #expect(reason == R_EXPIRED)
        tok[10] = tok[10] == 0x41 ? 0x42 : 0x41
        #expect(bitsec_fernet_decrypt(rt, tok, len, 0, 0, &out, 64, &n, &reason) == OK)
        #expect(reason == R_TAMPERED || reason == R_MALFORMED)
        #expect(bitsec_fernet_decrypt(rt, tok, len, -1, 0, &out, 64, &n, &reason) == E_INVALID)
    }

    /// bitsec_fernet_decrypt_ttl: -1 is "no limit", every other value is cryptography's ttl
    /// (expired when timestamp + ttl < now, refused more than 60 s ahead), 0 included.
    @Test func fernetTTLZeroIsALimit() {
        let rt = openFields()
        defer { bitsec_runtime_close(rt) }
        var tok = [CChar](repeating: 0, count: Int(bitsec_fernet_bound(5)) + 1)
        var n: UInt = 0
        #expect(bitsec_fernet_encrypt(rt, Array("hello".utf8), 5, 1_000_000, &tok, UInt(tok.count), &n) == OK)
        let len = n
        var out = [UInt8](repeating: 0, count: 64)
        func open(_ ttl: Int64, _ now: Int64) -> (Int32, Int32) {
            var reason: Int32 = -1
            var m: UInt = 0
            let rc = bitsec_fernet_decrypt_ttl(rt, tok, len, ttl, now, &out, 64, &m, &reason)
            return (rc, reason)
        }
        let R_NOT_YET_VALID = BitsecABI.BITSEC_FIELD_REASON_NOT_YET_VALID
        // ttl 0: fresh within its own second only.
        #expect(open(0, 1_000_000) == (OK, R_OK))
        #expect(open(0, 1_000_001) == (OK, R_EXPIRED))
        #expect(open(0, 999_940) == (OK, R_OK))
        #expect(open(0, 999_939) == (OK, R_NOT_YET_VALID))
        // ttl N: the age limit is inclusive.
        #expect(open(60, 1_000_060) == (OK, R_OK))
        #expect(open(60, 1_000_061) == (OK, R_EXPIRED))
        #expect(open(Int64.max, 2_000_000_000) == (OK, R_OK))
        // No limit: neither age nor future is checked.
        #expect(open(-1, 2_000_000_000) == (OK, R_OK))
        #expect(open(-1, 1) == (OK, R_OK))
        #expect(open(-2, 1_000_000).0 == E_INVALID)
        #expect(open(Int64.min, 1_000_000).0 == E_INVALID)
        // The old export keeps its meaning: 0 = no limit.
        var reason: Int32 = -1
        #expect(bitsec_fernet_decrypt(rt, tok, len, 0, 2_000_000_000, &out, 64, &n, &reason) == OK && reason == R_OK)
        // Migration takes the same TTL.
        var moved = [CChar](repeating: 0, count: Int(bitsec_field_bound(len, 0)) + 1)
        #expect(bitsec_fernet_migrate_ttl(rt, tok, len, 0, 1_000_001, "t.c|1", 5, 0, &moved, UInt(moved.count), &n, &reason) == OK)
        #expect(reason == R_EXPIRED && n == 0)
        #expect(bitsec_fernet_migrate_ttl(rt, tok, len, 0, 1_000_000, "t.c|1", 5, 0, &moved, UInt(moved.count), &n, &reason) == OK)
        #expect(reason == R_OK && n > 0)
        #expect(bitsec_fernet_migrate_ttl(rt, tok, len, -1, 2_000_000_000, "t.c|1", 5, 0, &moved, UInt(moved.count), &n, &reason) == OK)
        #expect(reason == R_OK)
        #expect(bitsec_fernet_migrate_ttl(rt, tok, len, -7, 1_000_000, "t.c|1", 5, 0, &moved, UInt(moved.count), &n, &reason) == E_INVALID)
    }
}
