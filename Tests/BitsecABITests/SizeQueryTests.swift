// One size-query convention for every variable output (out_buf, out_cap, *out_len): with
// out_buf NULL or out_cap too small the call returns BITSEC_E_BUFFER_TOO_SMALL, *out_len holds
// the size needed and nothing is written to the buffer; with that size it succeeds. The verify
// calls, whose result is a decision, answer NULL with out_cap 0 with BITSEC_OK and the size
// (the decision alone, as since 0.1.0); a too-small buffer is BITSEC_E_BUFFER_TOO_SMALL. The
// table is checked against include/bitsec_api.h: every function with an out_cap parameter
// needs a row.
import Testing
import Glibc
import Bitsec

private let secret = "JBSWY3DPEHPK3PXP"
private let AT: Int64 = 1_900_000_000

/// A call writing one variable output: (out_buf, out_cap, out_len) -> status.
private typealias OutputCall = (UnsafeMutablePointer<CChar>?, UInt, UnsafeMutablePointer<UInt>) -> Int32

/// Inputs made once per runtime: a valid token, ciphertexts, a decision with a rule, ...
private struct Fixture {
    let rt: OpaquePointer
    let dir: String
    var token = ""
    var refreshToken = ""
    var fieldToken: [UInt8] = []
    var fernetToken = ""
    var decision: UInt64 = 0
    var sessionToken = ""
}

/// Runs `call` and returns its output as bytes (the call must succeed with a large buffer).
private func output(_ call: OutputCall) -> [UInt8] {
    var buf = [CChar](repeating: 0, count: 64 << 10)
    var n: UInt = 0
    let rc = call(&buf, UInt(buf.count), &n)
    #expect(rc == OK, "\(lastError())")
    return buf.prefix(Int(n)).map { UInt8(bitPattern: $0) }
}

private func makeFixture(_ rt: OpaquePointer, _ dir: String) -> Fixture {
    var f = Fixture(rt: rt, dir: dir)
    let claims = #"{"sub":"u1","iss":"iss","aud":"aud","exp":2000000000}"#
    f.token = String(decoding: output { b, c, n in bitsec_token_sign(rt, claims, UInt(claims.utf8.count), nil, 0, b, c, n) }, as: UTF8.self)
    let pair = output { b, c, n in bitsec_token_issue_pair(rt, #"{"sub":"u1"}"#, 12, nil, 0, AT, b, c, n) }
    // {"access_token":"...","refresh_token":"...",...}: the string after the key.
    let key = Array(#""refresh_token":""#.utf8)
    if let at = (0...max(pair.count - key.count, 0)).first(where: { pair[$0..<min($0 + key.count, pair.count)].elementsEqual(key) }) {
        f.refreshToken = String(decoding: pair[(at + key.count)...].prefix { $0 != UInt8(ascii: "\"") }, as: UTF8.self)
    }
    #expect(!f.refreshToken.isEmpty, "no refresh_token in \(String(decoding: pair, as: UTF8.self))")
    f.fieldToken = output { b, c, n in bitsec_encrypt_field(rt, [1, 2, 3], 3, "ctx", 3, 0, b, c, n) }
    f.fernetToken = String(decoding: output { b, c, n in bitsec_fernet_encrypt(rt, [1, 2, 3], 3, AT, b, c, n) }, as: UTF8.self)
    // A granted decision names its deciding rule.
    let packed = Array("docs:read\0alice\0reader\0\0".utf8)
    let prc = packed.withUnsafeBufferPointer { p in
        bitsec_check_permission_packed(rt, UnsafeRawPointer(p.baseAddress)?.assumingMemoryBound(to: CChar.self), UInt(p.count), &f.decision)
    }
    #expect(prc == OK, "\(lastError())")
    var seq: UInt64 = 0
    let event = #"{"type": "session"}"#
    #expect(bitsec_audit_emit(rt, event, UInt(event.utf8.count), &seq) == OK, "\(lastError())")
    #expect(bitsec_audit_flush(rt) == OK, "\(lastError())")
    var tok = [CChar](repeating: 0, count: 64), sid = [CChar](repeating: 0, count: 64)
    #expect(bitsec_session_create(rt, "u1", 2, nil, 0, "203.0.113.7", 11, nil, 0, AT, &tok, &sid) == OK, "\(lastError())")
    f.sessionToken = String(cString: tok)
    return f
}

private struct Row: Sendable {
    let name: String
    /// The output may differ in length between calls (counters, random content of varying
    /// size) or the size query answers an upper bound: the successful call is checked for
    /// `*out_len <= size needed` instead of equality.
    let upperBound: Bool
    /// A deciding call: NULL with out_cap 0 is the decision alone, BITSEC_OK with the size.
    let decides: Bool
    let call: @Sendable (Fixture) -> OutputCall

    init(_ name: String, upperBound: Bool = false, decides: Bool = false, _ call: @escaping @Sendable (Fixture) -> OutputCall) {
        self.name = name
        self.upperBound = upperBound
        self.decides = decides
        self.call = call
    }
}

private func len(_ s: String) -> UInt { UInt(s.utf8.count) }

private let edPublicPEM = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAYSW5x0ncyzmesHYsxOwpYqYiLzHN6FsKkherCAndois=\n-----END PUBLIC KEY-----\n"

private let rows: [Row] = [
    Row("bitsec_runtime_describe") { f in { b, c, n in bitsec_runtime_describe(f.rt, b, c, n) } },
    Row("bitsec_verify_token", decides: true) { f in
        { b, c, n in var r: Int32 = -1; return bitsec_verify_token(f.rt, f.token, len(f.token), AT, &r, b, c, n) }
    },
    Row("bitsec_verify_token_at", decides: true) { f in
        { b, c, n in var r: Int32 = -1; return bitsec_verify_token_at(f.rt, f.token, len(f.token), AT, 5, &r, b, c, n) }
    },
    Row("bitsec_token_sign") { f in
        { b, c, n in bitsec_token_sign(f.rt, #"{"sub":"u2"}"#, 12, nil, 0, b, c, n) }
    },
    Row("bitsec_token_issue_pair") { f in
        { b, c, n in bitsec_token_issue_pair(f.rt, #"{"sub":"u2"}"#, 12, nil, 0, AT, b, c, n) }
    },
    // The size query answers the bound for any refresh (checked before the old token is spent).
    Row("bitsec_token_refresh", upperBound: true) { f in
        { b, c, n in var r: Int32 = -1; return bitsec_token_refresh(f.rt, f.refreshToken, len(f.refreshToken), nil, 0, AT + 1, &r, b, c, n) }
    },
    Row("bitsec_permission_rule") { f in { b, c, n in bitsec_permission_rule(f.rt, f.decision, b, c, n) } },
    Row("bitsec_permission_stats", upperBound: true) { f in { b, c, n in bitsec_permission_stats(f.rt, b, c, n) } },
    Row("bitsec_login_guard_client_key") { f in { b, c, n in bitsec_login_guard_client_key(f.rt, "2001:db8::1", 11, b, c, n) } },
    Row("bitsec_client_key") { f in { b, c, n in bitsec_client_key(f.rt, "2001:db8::1", 11, b, c, n) } },
    Row("bitsec_totp_secret_generate") { _ in { b, c, n in bitsec_totp_secret_generate(160, b, c, n) } },
    Row("bitsec_totp_provisioning_uri") { f in { b, c, n in bitsec_totp_provisioning_uri(f.rt, secret, len(secret), "carol", 5, b, c, n) } },
    Row("bitsec_totp_now") { f in { b, c, n in bitsec_totp_now(f.rt, secret, len(secret), AT, b, c, n) } },
    Row("bitsec_backup_code_generate") { f in { b, c, n in bitsec_backup_code_generate(f.rt, 2, b, c, n) } },
    Row("bitsec_backup_codes_generate") { f in { b, c, n in bitsec_backup_codes_generate(f.rt, 2, b, c, n) } },
    Row("bitsec_totp_secret_seal") { f in { b, c, n in bitsec_totp_secret_seal(f.rt, secret, len(secret), "carol", 5, b, c, n) } },
    Row("bitsec_totp_code") { _ in { b, c, n in bitsec_totp_code(secret, len(secret), 0, 6, 30, 0, AT, b, c, n) } },
    Row("bitsec_totp_uri") { _ in { b, c, n in bitsec_totp_uri(secret, len(secret), "bob", 3, nil, 0, 0, 6, 30, b, c, n) } },
    Row("bitsec_hotp_code") { _ in { b, c, n in bitsec_hotp_code(secret, len(secret), 0, 6, 1, b, c, n) } },
    Row("bitsec_encrypt_field") { f in { b, c, n in bitsec_encrypt_field(f.rt, [1, 2, 3], 3, "ctx", 3, 0, b, c, n) } },
    Row("bitsec_decrypt_field") { f in
        { b, c, n in
            var r: Int32 = -1
            return bitsec_decrypt_field(f.rt, f.fieldToken, UInt(f.fieldToken.count), "ctx", 3,
                                        UnsafeMutableRawPointer(b)?.assumingMemoryBound(to: UInt8.self), c, n, &r)
        }
    },
    Row("bitsec_field_rewrap") { f in
        { b, c, n in
            var r: Int32 = -1, w: Int32 = -1
            return bitsec_field_rewrap(f.rt, f.fieldToken, UInt(f.fieldToken.count), "ctx", 3, 0, b, c, n, &r, &w)
        }
    },
    Row("bitsec_rewrap_field") { f in
        { b, c, n in
            var r: Int32 = -1, w: Int32 = -1
            return bitsec_rewrap_field(f.rt, f.fieldToken, UInt(f.fieldToken.count), "ctx", 3, 0, b, c, n, &r, &w)
        }
    },
    Row("bitsec_fernet_encrypt") { f in { b, c, n in bitsec_fernet_encrypt(f.rt, [1, 2, 3], 3, AT, b, c, n) } },
    Row("bitsec_fernet_decrypt") { f in
        { b, c, n in
            var r: Int32 = -1
            return bitsec_fernet_decrypt(f.rt, f.fernetToken, len(f.fernetToken), 0, AT,
                                         UnsafeMutableRawPointer(b)?.assumingMemoryBound(to: UInt8.self), c, n, &r)
        }
    },
    Row("bitsec_fernet_decrypt_ttl") { f in
        { b, c, n in
            var r: Int32 = -1
            return bitsec_fernet_decrypt_ttl(f.rt, f.fernetToken, len(f.fernetToken), -1, AT,
                                             UnsafeMutableRawPointer(b)?.assumingMemoryBound(to: UInt8.self), c, n, &r)
        }
    },
    Row("bitsec_fernet_rotate") { f in
        { b, c, n in var r: Int32 = -1; return bitsec_fernet_rotate(f.rt, f.fernetToken, len(f.fernetToken), b, c, n, &r) }
    },
    Row("bitsec_fernet_migrate") { f in
        { b, c, n in
            var r: Int32 = -1
            return bitsec_fernet_migrate(f.rt, f.fernetToken, len(f.fernetToken), 0, AT, "ctx", 3, 0, b, c, n, &r)
        }
    },
    Row("bitsec_fernet_migrate_ttl") { f in
        { b, c, n in
            var r: Int32 = -1
            return bitsec_fernet_migrate_ttl(f.rt, f.fernetToken, len(f.fernetToken), -1, AT, "ctx", 3, 0, b, c, n, &r)
        }
    },
    Row("bitsec_audit_stats", upperBound: true) { f in { b, c, n in bitsec_audit_stats(f.rt, b, c, n) } },
    Row("bitsec_audit_verify") { f in
        { b, c, n in
            let paths = #"[""# + f.dir + #"/audit.log"]"#
            return bitsec_audit_verify(paths, len(paths), nil, 0, b, c, n)
        }
    },
    Row("bitsec_metrics_text", upperBound: true) { f in { b, c, n in bitsec_metrics_text(f.rt, b, c, n) } },
    // Ed25519: a PKCS#8 PEM of fixed length (every call generates a new key of that length).
    Row("bitsec_token_key_generate") { _ in { b, c, n in bitsec_token_key_generate("Ed25519", 7, b, c, n) } },
    Row("bitsec_token_key_public_jwk") { _ in { b, c, n in bitsec_token_key_public_jwk(edPublicPEM, len(edPublicPEM), b, c, n) } },
    Row("bitsec_session_validate", upperBound: true, decides: true) { f in
        { b, c, n in var r: Int32 = -1; return bitsec_session_validate(f.rt, f.sessionToken, len(f.sessionToken), "203.0.113.7", 11, nil, 0, AT, &r, b, c, n) }
    },
    Row("bitsec_session_list") { f in { b, c, n in bitsec_session_list(f.rt, "u1", 2, nil, 0, AT, b, c, n) } },
    Row("bitsec_csrf_token_issue") { f in { b, c, n in bitsec_csrf_token_issue(f.rt, "session-1", 9, AT, b, c, n) } },
    Row("bitsec_csrf_cookie_issue") { f in { b, c, n in bitsec_csrf_cookie_issue(f.rt, "binding-1", 9, AT, b, c, n) } },
    Row("bitsec_password_hash") { f in { b, c, n in bitsec_password_hash(f.rt, "correct horse battery staple", 28, b, c, n) } },
    // The guard decides like the verify calls: NULL with out_claims_cap 0 is the decision
    // alone (no rate limit here: calling it again takes nothing).
    Row("bitsec_guard_check", decides: true) { f in
        { b, c, n in
            var g = [Int64](repeating: 0, count: 8)
            return g.withUnsafeMutableBytes { res in
                bitsec_guard_check(f.rt, f.token, len(f.token), nil, 0, nil, 0, nil, 0, nil, 0, nil, 0, 1, AT, 0,
                                   res.baseAddress, b, c, n)
            }
        }
    },
]

/// The functions of include/bitsec_api.h with an out_cap parameter.
private func variableOutputExports() -> Set<String> {
    let root = #filePath.split(separator: "/").dropLast(3).joined(separator: "/")
    guard let f = fopen("/" + root + "/include/bitsec_api.h", "r") else { return [] }
    defer { fclose(f) }
    var names: Set<String> = []
    var line: UnsafeMutablePointer<CChar>? = nil
    var cap = 0
    while getline(&line, &cap, f) > 0, let line {
        let text = String(cString: line)
        guard !text.hasPrefix("/"), !text.hasPrefix(" "), !text.hasPrefix("#"), text.contains("size_t out_cap"),
              let paren = text.firstIndex(of: "("),
              let word = text[..<paren].split(whereSeparator: { $0 == " " || $0 == "*" }).last else { continue }
        names.insert(String(word))
    }
    free(line)
    return names
}

@Suite struct SizeQueryTests {
    @Test func everyVariableOutputHasARow() {
        let exported = variableOutputExports()
        #expect(exported.count >= 30, "parsed \(exported.count) functions")
        let covered = Set(rows.map(\.name))
        #expect(exported.subtracting(covered).isEmpty, "variable outputs without a size-query row: \(exported.subtracting(covered).sorted())")
        #expect(covered.subtracting(exported).isEmpty, "rows for functions without out_cap: \(covered.subtracting(exported).sorted())")
    }

    @Test(arguments: rows.map(\.name))
    func sizeQuery(_ name: String) throws {
        let row = try #require(rows.first { $0.name == name })
        let dir = makeTempDir("sizequery")
        defer { removeTempDir(dir) }
        let (rc, opened) = open(hostileConfig(dir))
        #expect(rc == OK, "\(lastError())")
        let rt = try #require(opened)
        defer { bitsec_runtime_close(rt) }
        let call = row.call(makeFixture(rt, dir))

        // NULL buffer, capacity 0: the size needed.
        var need: UInt = 0
        #expect(call(nil, 0, &need) == (row.decides ? OK : E_BUFFER), "\(name): \(lastError())")
        guard need > 0 else {
            Issue.record("\(name): no size needed")
            return
        }
        // One byte short: the same answer, and not a byte of the buffer written.
        let pattern = CChar(bitPattern: 0xA5)
        var small = [CChar](repeating: pattern, count: Int(need) + 16)
        var n: UInt = 0
        #expect(call(&small, need - 1, &n) == E_BUFFER, "\(name)")
        #expect(row.upperBound ? n > 0 : n == need, "\(name): \(n) then \(need)")
        #expect(small.allSatisfy { $0 == pattern }, "\(name) wrote to a buffer that was too small")
        // The size needed (plus the NUL): success, the output NUL-terminated.
        let slack = row.upperBound ? 4096 : 0
        var buf = [CChar](repeating: pattern, count: Int(need) + 1 + slack)
        n = 0
        #expect(call(&buf, UInt(buf.count), &n) == OK, "\(name): \(lastError())")
        #expect(row.upperBound ? n <= need + UInt(slack) : n == need, "\(name): \(n) then \(need)")
        if Int(n) < buf.count { #expect(buf[Int(n)] == 0, "\(name): no NUL after the output") }
    }
}
