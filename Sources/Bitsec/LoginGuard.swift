// The login guard (rate_limits' login_guard): attempts per account and per client, reserved
// before the password check.
internal import BitsecCore

/// Reserves one login attempt of account from client BEFORE the password check, or refuses
/// it. The attempt is counted as a failure of both keys up front (check-and-count, atomic
/// per key), so N concurrent guesses can never exceed a limit; after a successful login call
/// bitsec_login_guard_succeeded (which refunds it), after a failed one nothing (already
/// counted). Three rules, each with its own counter:
/// client: the address group (IPv6 /64 and IPv4 /32 by default, see bitsec_login_guard_client_key): by
/// default 5 failures in an hour block it for an hour;
/// account: its NFKC_Casefold form (case, fullwidth and other compatibility forms, and
/// default-ignorable characters make no difference): by default 10 free failures, then a
/// delay between attempts doubling from 1 s up to 60 s, and never more than 100 failures in
/// an hour; the wait an attacker can impose on the owner is bounded, there is no lock-out.
/// network (IPv6 only): every attempt also counts against the client's /48
/// (network_ipv6_prefix); 80 failures (network_max_failures) within the client window plus
/// its block time block the whole /48 for the client's block time, refused as CLIENT_BLOCKED before its client is
/// looked at, so an attacker's allocation can neither guess five times per /64 nor fill the
/// client table with blocks.
/// The network's block is checked first; then the client, the network and the account are
/// reserved; when one refuses, the earlier reservations are refunded. A newly blocked key emits a "blocked" audit event.
///
/// rt: the runtime (rate_limits section; its login_guard part, or the defaults).
/// account, account_len: the account name as typed (UTF-8, 1 to
/// BITSEC_LOGIN_GUARD_MAX_ACCOUNT_BYTES bytes); it is folded, then hashed when its fold is
/// BITSEC_RATE_LIMIT_MAX_KEY_BYTES or more, so characters the fold removes cannot make a
/// padded spelling of a name a counter of its own.
/// client, client_len: the client's address (UTF-8, 1 to BITSEC_RATE_LIMIT_MAX_KEY_BYTES
/// bytes); a string that is not an IP address is used as is.
/// at: the instant, Unix seconds; 0 means now (with Redis: the Redis server's clock).
/// out_decision: caller-owned array of BITSEC_LOGIN_GUARD_DECISION_LEN int64_t, written on
/// BITSEC_OK: [BITSEC_LOGIN_GUARD_D_ALLOWED] 1 or 0, [BITSEC_LOGIN_GUARD_D_REASON] a
/// BITSEC_LOGIN_GUARD_REASON_* code, [BITSEC_LOGIN_GUARD_D_REFUSED_BY] BITSEC_LOGIN_GUARD_KEY_* (NONE,
/// CLIENT, ACCOUNT), [BITSEC_LOGIN_GUARD_D_RETRY_AFTER] seconds to wait (>= 1 when refused, 0 when
/// allowed), [BITSEC_LOGIN_GUARD_D_REMAINING] failures the client may still make before its block,
/// [BITSEC_LOGIN_GUARD_D_FAILURE_RETRY_AFTER] when allowed, the seconds to wait if this attempt fails (0:
/// the next attempt is free), [BITSEC_LOGIN_GUARD_D_TICKET] the reservation, to pass to
/// bitsec_login_guard_succeeded or bitsec_login_guard_cancel (0 when refused),
/// [BITSEC_LOGIN_GUARD_D_FLAGS] BITSEC_LOGIN_GUARD_FLAG_* bits (DEGRADED, NEWLY_BLOCKED, TABLE_FULL).
/// Returns BITSEC_OK for every decision, allowed or refused (a Redis outage is never an
/// error: each rule's failure_policy decides and DEGRADED is set); BITSEC_E_INVALID_ARGUMENT
/// (NULL pointer, empty account or client, invalid UTF-8, at < 0); BITSEC_E_TOO_LARGE;
/// BITSEC_E_NOT_CONFIGURED; BITSEC_E_CLOSED.
/// Thread safety: safe from any thread.
/// Since: 0.2.0
@c(bitsec_login_guard_begin)
public func bitsec_login_guard_begin(_ rt: OpaquePointer?, _ account: UnsafePointer<CChar>?, _ account_len: UInt,
                                     _ client: UnsafePointer<CChar>?, _ client_len: UInt, _ at: Int64,
                                     _ out_decision: UnsafeMutablePointer<Int64>?) -> Int32 {
    withRuntime(rt, timed: .loginGuard) { (r) throws(BitsecError) in
        let out_decision = try requiredOut(out_decision, "out_decision")
        let g = try r.require(r.rateLimits).loginGuard
        let d = try g.begin(account: try keyArg(account, account_len, "account", max: LoginGuard.maxAccountBytes),
                            client: try keyArg(client, client_len, "client"), at: at)
        for (i, v) in d.packed.enumerated() { out_decision[i] = v }
    }
}

/// The attempt reserved by bitsec_login_guard_begin succeeded: the client's reservation is
/// refunded (its failures against OTHER accounts stay: logging in to one's own account does
/// not reset a guesser's count) and the account's failures and back-off are cleared.
///
/// rt, account, account_len, client, client_len, at: as bitsec_login_guard_begin (the same
/// account and client).
/// ticket: out_decision[BITSEC_LOGIN_GUARD_D_TICKET] of that begin; 0 refunds nothing on the
/// client (the account is still cleared).
/// Returns BITSEC_OK; BITSEC_E_INVALID_ARGUMENT (also ticket < 0); BITSEC_E_TOO_LARGE;
/// BITSEC_E_NOT_CONFIGURED; BITSEC_E_CLOSED. A Redis outage is not an error (the failure
/// policy applies; with "local" the in-process state is updated).
/// Thread safety: safe from any thread.
/// Since: 0.2.0
@c(bitsec_login_guard_succeeded)
public func bitsec_login_guard_succeeded(_ rt: OpaquePointer?, _ account: UnsafePointer<CChar>?, _ account_len: UInt,
                                         _ client: UnsafePointer<CChar>?, _ client_len: UInt, _ ticket: Int64,
                                         _ at: Int64) -> Int32 {
    withRuntime(rt, timed: .loginGuard) { (r) throws(BitsecError) in
        let g = try r.require(r.rateLimits).loginGuard
        _ = try RateLimitLimits.instantMs(at)
        try g.succeeded(account: try keyArg(account, account_len, "account", max: LoginGuard.maxAccountBytes),
                        client: try keyArg(client, client_len, "client"), ticket: ticket, at: at)
    }
}

/// The attempt reserved by bitsec_login_guard_begin was neither a success nor a failure (the
/// password was right but a second factor is still due; the host gave up before checking):
/// both reservations are refunded and nothing is cleared. A wrong second factor is a failure:
/// do not cancel it.
///
/// rt, account, account_len, client, client_len, ticket, at: as bitsec_login_guard_succeeded
/// (ticket 0: nothing to refund).
/// Returns BITSEC_OK; BITSEC_E_INVALID_ARGUMENT; BITSEC_E_TOO_LARGE; BITSEC_E_NOT_CONFIGURED;
/// BITSEC_E_CLOSED.
/// Thread safety: safe from any thread.
/// Since: 0.2.0
@c(bitsec_login_guard_cancel)
public func bitsec_login_guard_cancel(_ rt: OpaquePointer?, _ account: UnsafePointer<CChar>?, _ account_len: UInt,
                                      _ client: UnsafePointer<CChar>?, _ client_len: UInt, _ ticket: Int64,
                                      _ at: Int64) -> Int32 {
    withRuntime(rt) { (r) throws(BitsecError) in
        let g = try r.require(r.rateLimits).loginGuard
        _ = try RateLimitLimits.instantMs(at)
        try g.cancel(account: try keyArg(account, account_len, "account", max: LoginGuard.maxAccountBytes),
                     client: try keyArg(client, client_len, "client"), ticket: ticket, at: at)
    }
}

/// The key a client address is counted under, by the login guard and by the rate limits of a
/// host that keys on addresses: an IPv4 address reduced to its first ipv4_prefix bits
/// (default 32), an IPv6 address to its first ipv6_prefix bits (default 64: one customer's
/// allocation, so rotating addresses inside it counts as one client), both set in
/// rate_limits.login_guard; an IPv4-mapped IPv6 address (::ffff:a.b.c.d) counts as the IPv4
/// address. Written canonically: dotted decimal, or RFC 5952 IPv6 (lowercase, "::" for the
/// longest run of zero groups), followed by "/<prefix>" unless the prefix is the whole
/// address. An IPv6 address loses its zone ("fe80::1%eth0" is grouped as "fe80::1" would be:
/// a new interface name is no new budget). A string that is not an IP address in standard notation
/// (a host name, IPv4 with leading zeros) is returned unchanged.
///
/// rt: the runtime (rate_limits section).
/// client, client_len: the address (UTF-8, 1 to BITSEC_RATE_LIMIT_MAX_KEY_BYTES bytes).
/// out_buf, out_cap: caller-owned buffer (BITSEC_RATE_LIMIT_MAX_KEY_BYTES + 1 always
/// suffices). out_len: receives the key's length (excluding the NUL written after it when
/// there is room), also when the buffer is too small.
/// Returns BITSEC_OK; BITSEC_E_BUFFER_TOO_SMALL (*out_len holds the size needed);
/// BITSEC_E_INVALID_ARGUMENT; BITSEC_E_TOO_LARGE; BITSEC_E_NOT_CONFIGURED; BITSEC_E_CLOSED.
/// Thread safety: safe from any thread.
/// Since: 0.2.0 (first exported as bitsec_client_key, kept as a deprecated alias)
@c(bitsec_login_guard_client_key)
public func bitsec_login_guard_client_key(_ rt: OpaquePointer?, _ client: UnsafePointer<CChar>?, _ client_len: UInt,
                              _ out_buf: UnsafeMutablePointer<CChar>?, _ out_cap: UInt, _ out_len: UnsafeMutablePointer<UInt>?) -> Int32 {
    withRuntime(rt) { (r) throws(BitsecError) in
        let g = try r.require(r.rateLimits).loginGuard
        let key = g.clientKey(try keyArg(client, client_len, "client"))
        try writeOutput(Array(key.utf8), out_buf, out_cap, out_len)
    }
}
