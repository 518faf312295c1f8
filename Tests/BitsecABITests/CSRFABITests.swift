// The csrf functions through the exported C ABI only.
import Testing
import Glibc
import Bitsec

private let CSRF_VALID = BitsecABI.BITSEC_CSRF_VALID, CSRF_INVALID = BitsecABI.BITSEC_CSRF_INVALID
private let CSRF_MISSING = BitsecABI.BITSEC_CSRF_MISSING, CSRF_MISMATCH = BitsecABI.BITSEC_CSRF_MISMATCH
private let CSRF_MALFORMED = BitsecABI.BITSEC_CSRF_MALFORMED, CSRF_EXPIRED = BitsecABI.BITSEC_CSRF_EXPIRED
private let AT: Int64 = 1_900_000_000

private let config = #"""
{"allow_inline_secrets": true,
 "csrf": {"key": {"value": "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f", "encoding": "hex"},
          "allowed_origins": ["https://app.example.com"], "max_age_s": 3600}}
"""#

private func issue(_ rt: OpaquePointer?, _ sid: String, cookie: Bool = false) -> String {
    var buf = [CChar](repeating: 0, count: 128)
    var n: UInt = 0
    let rc = cookie ? bitsec_csrf_cookie_issue(rt, sid, UInt(sid.utf8.count), AT, &buf, 128, &n)
                    : bitsec_csrf_token_issue(rt, sid, UInt(sid.utf8.count), AT, &buf, 128, &n)
    #expect(rc == OK, "\(lastError())")
    #expect(n == UInt(BitsecABI.BITSEC_CSRF_TOKEN_BYTES))
    return String(cString: buf)
}

private func verify(_ rt: OpaquePointer?, _ sid: String, _ token: String, at: Int64 = AT + 1) -> (Int32, Int32) {
    var r: Int32 = -1
    let rc = bitsec_csrf_token_verify(rt, sid, UInt(sid.utf8.count), token, UInt(token.utf8.count), at, &r)
    return (rc, r)
}

private func origin(_ rt: OpaquePointer?, _ m: String, _ o: String?, _ f: String?) -> Int32 {
    var r: Int32 = -1
    let rc = bitsec_csrf_origin_check(rt, m, UInt(m.utf8.count), o, UInt(o?.utf8.count ?? 0), f, UInt(f?.utf8.count ?? 0), &r)
    #expect(rc == OK, "\(lastError())")
    return r
}

@Suite struct CSRFABITests {
    @Test func synchronizerTokens() {
        let (rc, rt) = open(config)
        #expect(rc == OK, "\(lastError())")
        defer { bitsec_runtime_close(rt) }
        let t = issue(rt, "session-1")
        #expect(verify(rt, "session-1", t) == (OK, CSRF_VALID))
        #expect(verify(rt, "session-2", t) == (OK, CSRF_INVALID))
        #expect(verify(rt, "session-1", "") == (OK, CSRF_MISSING))
        #expect(verify(rt, "session-1", "not-a-token") == (OK, CSRF_MALFORMED))
        #expect(verify(rt, "session-1", t, at: AT + 3600) == (OK, CSRF_EXPIRED))
        #expect(verify(rt, "", t).0 == E_INVALID)
        #expect(String(cString: bitsec_csrf_reason_name(CSRF_INVALID)) == "csrf_token_invalid")
        #expect(String(cString: bitsec_csrf_reason_name(CSRF_MISSING)) == "csrf_token_missing")
        #expect(String(cString: bitsec_csrf_reason_name(BitsecABI.BITSEC_CSRF_ORIGIN_NOT_ALLOWED)) == "origin_not_allowed")
        #expect(String(cString: bitsec_csrf_reason_name(99)) == "unknown")
    }

    @Test func doubleSubmitCookies() {
        let (rc, rt) = open(config)
        #expect(rc == OK, "\(lastError())")
        defer { bitsec_runtime_close(rt) }
        let c = issue(rt, "b1", cookie: true)
        func check(_ cookie: String, _ submitted: String) -> Int32 {
            var r: Int32 = -1
            #expect(bitsec_csrf_cookie_verify(rt, "b1", 2, cookie, UInt(cookie.utf8.count), submitted, UInt(submitted.utf8.count), AT + 1, &r) == OK)
            return r
        }
        #expect(check(c, c) == CSRF_VALID)
        #expect(check(c, issue(rt, "b1", cookie: true)) == CSRF_MISMATCH)
        #expect(check(c, "") == CSRF_MISSING)
        let sync = issue(rt, "b1")
        #expect(check(sync, sync) == CSRF_INVALID)
    }

    @Test func originCheck() {
        let (rc, rt) = open(config)
        #expect(rc == OK, "\(lastError())")
        defer { bitsec_runtime_close(rt) }
        #expect(origin(rt, "GET", "https://evil.example", "cross-site") == CSRF_VALID)
        #expect(origin(rt, "POST", "https://app.example.com", nil) == CSRF_VALID)
        #expect(origin(rt, "POST", "https://evil.example", nil) == BitsecABI.BITSEC_CSRF_ORIGIN_NOT_ALLOWED)
        #expect(origin(rt, "POST", nil, "cross-site") == BitsecABI.BITSEC_CSRF_CROSS_SITE)
        #expect(origin(rt, "POST", nil, nil) == BitsecABI.BITSEC_CSRF_ORIGIN_MISSING)
        #expect(origin(rt, "POST", nil, "same-origin") == CSRF_VALID)
    }

    @Test func keysReload() {
        let (rc, rt) = open(config)
        #expect(rc == OK, "\(lastError())")
        defer { bitsec_runtime_close(rt) }
        let t = issue(rt, "s")
        let doc = #"{"key": {"value": "1f1e1d1c1b1a191817161514131211100f0e0d0c0b0a09080706050403020100", "encoding": "hex"}}"#
        #expect(bitsec_csrf_keys_reload(rt, doc, UInt(doc.utf8.count)) == OK, "\(lastError())")
        #expect(verify(rt, "s", t) == (OK, CSRF_INVALID))
        #expect(bitsec_csrf_keys_reload(rt, "{}", 2) == E_CONFIG)
        let (_, bare) = open(#"{"allow_inline_secrets": true}"#)
        defer { bitsec_runtime_close(bare) }
        #expect(verify(bare, "s", t).0 == E_NOT_CONFIGURED)
    }
}
