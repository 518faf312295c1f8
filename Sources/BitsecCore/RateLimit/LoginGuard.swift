internal import COpenSSL

/// Why the login guard decided as it did (`BITSEC_LOGIN_GUARD_REASON_*`).
public enum LoginGuardReason: Int64, Sendable {
    case ok = 0
    /// The client (its address group) is blocked after too many failures.
    case clientBlocked = 1
    /// The account is backing off: the next attempt must wait (at most `max_delay_seconds`).
    case accountBackoff = 2
    /// The account reached `max_failures` in its window: attempts wait for the oldest failure
    /// to leave the window.
    case accountLimit = 3
    /// The in-process table is full and the new key could not be tracked (refused: the safe side).
    case tableFull = 4
    /// Redis was unavailable and the failure policy is `deny`.
    case backendDeny = 5
}

/// One `begin`'s decision (`int64_t[BITSEC_LOGIN_GUARD_DECISION_LEN]` in the ABI).
public struct LoginGuardDecision: Sendable, Equatable {
    public enum Key: Int64, Sendable { case none = 0, client = 1, account = 2 }

    public var allowed: Bool
    public var reason: LoginGuardReason
    /// Which key refused (`none` when allowed).
    public var refusedBy: Key
    /// Seconds to wait when refused (>= 1); 0 when allowed.
    public var retryAfter: Int64
    /// Failures the client may still make after this attempt before it is blocked.
    public var remaining: Int64
    /// When allowed: the seconds the caller will have to wait if this attempt fails (0: the
    /// next attempt is free); what a failed login's `Retry-After` says.
    public var failureRetryAfter: Int64
    /// The reservation's instant (ms); `succeeded` and `cancel` take it back.
    public var ticket: Int64
    public var degraded: Bool
    public var newlyBlocked: Bool
    public var tableFull: Bool

    public static let flagDegraded: Int64 = 1
    public static let flagNewlyBlocked: Int64 = 2
    public static let flagTableFull: Int64 = 4

    public var flags: Int64 {
        (degraded ? Self.flagDegraded : 0) | (newlyBlocked ? Self.flagNewlyBlocked : 0) | (tableFull ? Self.flagTableFull : 0)
    }

    /// The ABI layout: allowed, reason, refused_by, retry_after, remaining,
    /// failure_retry_after, ticket, flags.
    public var packed: [Int64] {
        [allowed ? 1 : 0, reason.rawValue, refusedBy.rawValue, retryAfter, remaining, failureRetryAfter, ticket, flags]
    }
    public static let packedCount = 8
}

/// The login guard: failures counted per client (its address group) AND per account, each
/// attempt reserved before the password check.
///
/// - Client rule (default: 5 failures in an hour block the client for an hour): stops one
///   source guessing many passwords. A success refunds only that attempt: the client's
///   failures against other accounts stay, so logging in to one's own account between
///   guesses does not reset the count.
/// - Account rule (default: 10 free failures, then a delay between attempts doubling from 1 s
///   to at most 60 s; never more than 100 failures in an hour): stops many sources guessing
///   one password, throttling rather than locking the account (OWASP Authentication Cheat
///   Sheet; NIST SP 800-63B 5.2.2: at most 100 consecutive failures). One guess delays the
///   owner at most `max_delay_seconds`; an attacker who guesses each time the delay ends
///   keeps the owner refused while the attack lasts (docs/configuration.md).
///   A success of the account clears its failures.
/// - Clients are grouped by network: IPv6 /64 (one customer's allocation), IPv4 /32, by
///   default; accounts are folded with NFKC_Casefold (`LoginKeys`).
/// - Network rule (IPv6 only; default: 80 failures of one /48's clients within the client
///   window plus its block time block the whole /48 for the client rule's block time): the
///   client rule at the network an attacker holds. Without it a /48 (65,536 /64 clients) guesses five times per /64,
///   and its blocked /64s fill the in-memory client table so that every new client is
///   refused (`table_full`). Its block is checked before the client is looked at (a blocked
///   network makes no entries); it is reserved after the client and refunded like it. Its neighbours share the
///   block: the price of the rule.
///
/// `begin` reserves the attempt on the client, then on the account (refunding the client's
/// reservation if the account refuses); N concurrent attempts never exceed either limit.
/// With Redis these are two script calls, each on one hash-tagged key pair (one slot): it
/// works on Redis Cluster. While Redis is unavailable, each rule's `failure_policy` decides.
public final class LoginGuard: Sendable {
    public let client: FailureWindow
    public let account: FailureWindow
    /// Failures counted per IPv6 network of `networkPrefix` bits; nil when the network rule is
    /// off (`networkPrefix >= ipv6Prefix`).
    public let network: FailureWindow?
    public let ipv4Prefix: Int
    public let ipv6Prefix: Int
    public let networkPrefix: Int
    public let networkMaxFailures: Int64

    public static let defaultNetworkPrefix = 48
    /// Sixteen clients' worth of the default client rule (5 failures each).
    public static let defaultNetworkMaxFailures: Int64 = 80

    /// The network rule's policy: `maxFailures` within the client's window plus its block time
    /// (every failure of every client still blocked stays counted: else a network could pace
    /// its clients to keep more of them blocked at once than the bound says) block the network
    /// for the client's block time; Redis outages as the client rule.
    static func networkPolicy(_ client: FailureWindowPolicy, maxFailures: Int64) -> FailureWindowPolicy {
        FailureWindowPolicy(maxFailures: maxFailures,
                            windowSeconds: min(RateLimitLimits.maxPeriodSeconds, client.windowSeconds + client.blockSeconds),
                            blockSeconds: client.blockSeconds, failurePolicy: client.failurePolicy)
    }

    /// The network table's bound: a network's entry stands for several clients' entries.
    static func networkMaxKeys(_ maxKeys: Int) -> Int { max(64, maxKeys / 16) }

    public static let defaultClient = FailureWindowPolicy()
    public static let defaultAccount = FailureWindowPolicy(
        maxFailures: 100, windowSeconds: 3600, blockSeconds: 60,
        backoff: FailureBackoff(freeFailures: 10, baseDelayMs: 1000, maxDelayMs: 60_000))

    /// With the in-memory windows in this process.
    public init(client: FailureWindowPolicy = LoginGuard.defaultClient, account: FailureWindowPolicy = LoginGuard.defaultAccount,
                ipv4Prefix: Int = 32, ipv6Prefix: Int = 64, networkPrefix: Int = LoginGuard.defaultNetworkPrefix,
                networkMaxFailures: Int64 = LoginGuard.defaultNetworkMaxFailures, redis: RedisPool?, audit: (any AuditHook)?,
                maxKeys: Int = 100_000, outageRetryMs: Int64 = 500) {
        self.client = FailureWindow(name: "login_client", policy: client, redis: redis, audit: audit, maxKeys: maxKeys,
                                    outageRetryMs: outageRetryMs)
        self.account = FailureWindow(name: "login_account", policy: account, redis: redis, audit: audit, maxKeys: maxKeys,
                                     outageRetryMs: outageRetryMs)
        self.network = networkPrefix < ipv6Prefix
            ? FailureWindow(name: "login_network", policy: Self.networkPolicy(client, maxFailures: networkMaxFailures), redis: redis,
                            audit: audit, maxKeys: Self.networkMaxKeys(maxKeys), outageRetryMs: outageRetryMs)
            : nil
        self.ipv4Prefix = ipv4Prefix
        self.ipv6Prefix = ipv6Prefix
        self.networkPrefix = networkPrefix
        self.networkMaxFailures = networkMaxFailures
    }

    /// With the in-memory windows at `placement` (this process, or the host's shared region).
    init(client: FailureWindowPolicy = LoginGuard.defaultClient, account: FailureWindowPolicy = LoginGuard.defaultAccount,
         ipv4Prefix: Int = 32, ipv6Prefix: Int = 64, networkPrefix: Int = LoginGuard.defaultNetworkPrefix,
         networkMaxFailures: Int64 = LoginGuard.defaultNetworkMaxFailures, redis: RedisPool?, audit: (any AuditHook)?,
         maxKeys: Int = 100_000, outageRetryMs: Int64 = 500, placement: TablePlacement) throws(BitsecError) {
        self.client = try FailureWindow(name: "login_client", policy: client, redis: redis, audit: audit, maxKeys: maxKeys,
                                        outageRetryMs: outageRetryMs, placement: placement)
        self.account = try FailureWindow(name: "login_account", policy: account, redis: redis, audit: audit, maxKeys: maxKeys,
                                         outageRetryMs: outageRetryMs, placement: placement)
        self.network = networkPrefix < ipv6Prefix
            ? try FailureWindow(name: "login_network", policy: Self.networkPolicy(client, maxFailures: networkMaxFailures), redis: redis,
                                audit: audit, maxKeys: Self.networkMaxKeys(maxKeys), outageRetryMs: outageRetryMs, placement: placement)
            : nil
        self.ipv4Prefix = ipv4Prefix
        self.ipv6Prefix = ipv6Prefix
        self.networkPrefix = networkPrefix
        self.networkMaxFailures = networkMaxFailures
    }

    /// Reads the `login_guard` object: `client` {max_failures, window_seconds,
    /// block_seconds, failure_policy}, `account` {free_failures, base_delay_seconds,
    /// max_delay_seconds, max_failures, window_seconds, failure_policy}, `ipv4_prefix`,
    /// `ipv6_prefix`, `network_ipv6_prefix`, `network_max_failures`; each optional.
    static func read(_ o: ConfigObject?, redis: RedisPool?, audit: (any AuditHook)?, maxKeys: Int, outageRetryMs: Int64,
                     placement: TablePlacement = .process) throws(BitsecError) -> LoginGuard {
        guard let o else { return try LoginGuard(redis: redis, audit: audit, maxKeys: maxKeys, outageRetryMs: outageRetryMs, placement: placement) }
        let clientPolicy = try o.object("client").map { (c) throws(BitsecError) in try FailureWindowPolicy.read(c, defaults: defaultClient) } ?? defaultClient
        var accountPolicy = defaultAccount
        if let a = try o.object("account") {
            let d = defaultAccount, b = d.backoff ?? FailureBackoff(freeFailures: 10, baseDelayMs: 1000, maxDelayMs: 60_000)
            let free = try a.int("free_failures", in: 0...1000, default: b.freeFailures)
            let baseS = try a.int("base_delay_seconds", in: 1...3600, default: b.baseDelayMs / 1000)
            let maxS = try a.int("max_delay_seconds", in: 1...3600, default: b.maxDelayMs / 1000)
            let maxF = try a.int("max_failures", in: 1...100, default: d.maxFailures)
            let win = try a.int("window_seconds", in: 1...RateLimitLimits.maxPeriodSeconds, default: d.windowSeconds)
            let policy = try BackendFailurePolicy.read(a, default: d.failurePolicy)
            try a.finish()
            guard baseS <= maxS else { throw .config("\(a.fieldPath("base_delay_seconds")) must not exceed max_delay_seconds") }
            guard free < maxF else { throw .config("\(a.fieldPath("free_failures")) must be less than max_failures") }
            accountPolicy = FailureWindowPolicy(maxFailures: maxF, windowSeconds: win, blockSeconds: maxS, failurePolicy: policy,
                                                backoff: FailureBackoff(freeFailures: free, baseDelayMs: baseS * 1000, maxDelayMs: maxS * 1000))
        }
        let v4 = Int(try o.int("ipv4_prefix", in: 8...32, default: 32))
        let v6 = Int(try o.int("ipv6_prefix", in: 16...128, default: 64))
        let net = Int(try o.int("network_ipv6_prefix", in: 16...128, default: Int64(defaultNetworkPrefix)))
        let netMax = try o.int("network_max_failures", in: 1...1000, default: defaultNetworkMaxFailures)
        try o.finish()
        return try LoginGuard(client: clientPolicy, account: accountPolicy, ipv4Prefix: v4, ipv6Prefix: v6, networkPrefix: net,
                              networkMaxFailures: netMax, redis: redis, audit: audit,
                              maxKeys: maxKeys, outageRetryMs: outageRetryMs, placement: placement)
    }

    /// The client's key (`LoginKeys.client` with this guard's prefixes).
    public func clientKey(_ client: String) -> String {
        LoginKeys.client(client, ipv4Prefix: ipv4Prefix, ipv6Prefix: ipv6Prefix)
    }

    /// The most an account name may be as typed (BITSEC_LOGIN_GUARD_MAX_ACCOUNT_BYTES). Far
    /// above a key's 512 bytes: the name is folded first and bounded after, so that characters
    /// the fold removes (a zero-width space is three bytes and folds to nothing) cannot push a
    /// name past the bound and make it a key of its own, a fresh account counter per padding.
    public static let maxAccountBytes = 4096

    /// The account's key: `=` and its NFKC_Casefold form, or `#` and the SHA-256 (hex) of that
    /// form when it is longer than a key may be. The name is bounded as typed by
    /// `maxAccountBytes` and as folded by the key's bound, in that order.
    public func accountKey(_ account: String) throws(BitsecError) -> String {
        try Self.checkAccount(account)
        let folded = LoginKeys.account(account)
        if folded.utf8.count < RateLimitLimits.maxKeyBytes { return "=" + folded }
        var md = [UInt8](repeating: 0, count: 32)
        var n: UInt32 = 0
        let bytes = Array(folded.utf8)
        let ok = bytes.withUnsafeBytes { s in
            md.withUnsafeMutableBytes { m in
                EVP_Digest(s.baseAddress, s.count, m.baseAddress?.assumingMemoryBound(to: UInt8.self), &n, EVP_sha256(), nil)
            }
        }
        guard ok == 1 else { throw .internalError("sha-256 of a long account name failed") }
        return "#" + Hex.encode(md)
    }

    /// The account name's bounds as typed (cheap: before anything is counted or folded).
    static func checkAccount(_ account: String) throws(BitsecError) {
        guard !account.isEmpty else { throw .invalid("account is empty") }
        guard account.utf8.count <= maxAccountBytes else {
            throw .tooLarge("account: \(account.utf8.count) bytes exceeds the limit of \(maxAccountBytes)")
        }
    }

    /// The network key of an IPv6 client (`networkPrefix` bits), nil for anything else.
    func networkKey(_ client: String, clientKey c: String) -> String? {
        guard network != nil, c.utf8.contains(UInt8(ascii: ":")) else { return nil }
        let n = LoginKeys.client(client, ipv4Prefix: ipv4Prefix, ipv6Prefix: networkPrefix)
        return n == c ? nil : n
    }

    private func clientKeyChecked(_ client: String) throws(BitsecError) -> String {
        guard !client.isEmpty else { throw .invalid("client is empty") }
        guard client.utf8.count <= RateLimitLimits.maxKeyBytes else {
            throw .tooLarge("client: \(client.utf8.count) bytes exceeds the limit of \(RateLimitLimits.maxKeyBytes)")
        }
        return clientKey(client)
    }

    /// Reserves one login attempt of `account` from `client` before the password check, or
    /// refuses it. `at`: Unix seconds, 0 = now.
    public func begin(account: String, client: String, at: Int64 = 0) throws(BitsecError) -> LoginGuardDecision {
        // The name is folded only once the client may make the attempt: a fold of 4 KiB of
        // some scripts costs milliseconds, which a blocked client must not get for free.
        try Self.checkAccount(account)
        let c = try clientKeyChecked(client)
        _ = try RateLimitLimits.instantMs(at)
        let n = networkKey(client, clientKey: c)
        if let network, let n {
            // A blocked network is refused before its client is looked at: no entry is made.
            // (Only a check: a reservation here, before the client's, would let a blocked
            // client's refused retries hold the network's budget while they are in flight.)
            let ns = try network.check(key: n, at: at)
            if ns.blocked {
                let deny = ns.degraded && network.policy.failurePolicy == .deny
                return LoginGuardDecision(allowed: false, reason: deny ? .backendDeny : .clientBlocked, refusedBy: .client,
                                          retryAfter: max(1, ns.retryAfter), remaining: 0, failureRetryAfter: 0, ticket: 0,
                                          degraded: ns.degraded, newlyBlocked: false, tableFull: false)
            }
        }
        let cr = try self.client.reserve(key: c, at: at)
        if !cr.allowed {
            let reason: LoginGuardReason = cr.tableFull ? .tableFull : (cr.degraded && self.client.policy.failurePolicy == .deny ? .backendDeny : .clientBlocked)
            return LoginGuardDecision(allowed: false, reason: reason, refusedBy: .client, retryAfter: Self.seconds(cr.retryAfterMs),
                                      remaining: 0, failureRetryAfter: 0, ticket: 0, degraded: cr.degraded,
                                      newlyBlocked: cr.newlyBlocked, tableFull: cr.tableFull)
        }
        // The network at the client's instant (one ticket for all three): a client holds at
        // most its own max_failures of the network's budget, in flight or not. A network
        // table full of live blocks refuses (table_full), as the other tables do.
        var networkReserved = false
        if let network, let n {
            let nr: FailureReservation
            do {
                nr = try network.reserve(key: n, at: at, nowMs: cr.ticketMs)
            } catch {
                _ = try? self.client.refund(key: c, ticketMs: cr.ticketMs, at: at)
                throw error
            }
            if !nr.allowed {
                _ = try? self.client.refund(key: c, ticketMs: cr.ticketMs, at: at)
                let reason: LoginGuardReason = nr.tableFull ? .tableFull
                    : (nr.degraded && network.policy.failurePolicy == .deny ? .backendDeny : .clientBlocked)
                return LoginGuardDecision(allowed: false, reason: reason, refusedBy: .client, retryAfter: Self.seconds(nr.retryAfterMs),
                                          remaining: 0, failureRetryAfter: 0, ticket: 0, degraded: cr.degraded || nr.degraded,
                                          newlyBlocked: nr.newlyBlocked, tableFull: nr.tableFull)
            }
            networkReserved = true
        }
        /// Takes back the client's and the network's reservations of a refused attempt.
        func refundEarlier() {
            _ = try? self.client.refund(key: c, ticketMs: cr.ticketMs, at: at)
            if networkReserved, let network, let n { _ = try? network.refund(key: n, ticketMs: cr.ticketMs, at: at) }
        }
        let ar: FailureReservation
        do {
            let a = try accountKey(account)
            ar = try self.account.reserve(key: a, at: at, nowMs: cr.ticketMs)
        } catch {
            refundEarlier()
            throw error
        }
        if !ar.allowed {
            refundEarlier()
            let reason: LoginGuardReason = ar.tableFull ? .tableFull
                : (ar.degraded && self.account.policy.failurePolicy == .deny ? .backendDeny
                   : (ar.atLimit ? .accountLimit : .accountBackoff))
            return LoginGuardDecision(allowed: false, reason: reason, refusedBy: .account, retryAfter: Self.seconds(ar.retryAfterMs),
                                      remaining: max(0, self.client.policy.maxFailures - cr.failures + 1), failureRetryAfter: 0, ticket: 0,
                                      degraded: cr.degraded || ar.degraded, newlyBlocked: ar.newlyBlocked, tableFull: ar.tableFull)
        }
        let wait = max(cr.failureRetryAfterMs, ar.failureRetryAfterMs)
        return LoginGuardDecision(allowed: true, reason: .ok, refusedBy: .none, retryAfter: 0,
                                  remaining: max(0, self.client.policy.maxFailures - cr.failures), failureRetryAfter: wait > 0 ? Self.seconds(wait) : 0,
                                  ticket: cr.ticketMs, degraded: cr.degraded || ar.degraded, newlyBlocked: false, tableFull: false)
    }

    /// The attempt reserved by `begin` (its `ticket`) succeeded: the client's reservation is
    /// refunded (its failures against other accounts stay) and the account's failures and
    /// back-off are cleared. `ticket` 0: nothing to refund on the client.
    public func succeeded(account: String, client: String, ticket: Int64, at: Int64 = 0) throws(BitsecError) {
        let a = try accountKey(account)
        let c = try clientKeyChecked(client)
        guard ticket >= 0 else { throw .invalid("ticket must be >= 0") }
        // The network's reservation is taken back only when the client's was there: a repeated
        // or forged ticket must not remove another client's failure of the same instant. (When
        // the client's store could not say, during an outage, the network's is taken back.)
        if ticket > 0, Self.confirmed(try self.client.refund(key: c, ticketMs: ticket, at: at)),
           let network, let n = networkKey(client, clientKey: c) {
            _ = try network.refund(key: n, ticketMs: ticket, at: at)
        }
        try self.account.clear(key: a, at: at)
    }

    /// The attempt reserved by `begin` was neither a success nor a failure (the password was
    /// right and a second factor is still due; the host gave up before checking): both
    /// reservations are refunded, nothing is cleared.
    public func cancel(account: String, client: String, ticket: Int64, at: Int64 = 0) throws(BitsecError) {
        let a = try accountKey(account)
        let c = try clientKeyChecked(client)
        guard ticket >= 0 else { throw .invalid("ticket must be >= 0") }
        guard ticket > 0 else { return }
        // The account's and the network's reservations only when the client's was there (a
        // repeated or forged ticket takes nothing back from anyone else).
        guard Self.confirmed(try self.client.refund(key: c, ticketMs: ticket, at: at)) else { return }
        if let network, let n = networkKey(client, clientKey: c) { _ = try network.refund(key: n, ticketMs: ticket, at: at) }
        try self.account.refund(key: a, ticketMs: ticket, at: at)
    }

    /// Whether a client refund lets the network's and the account's go ahead: it took the
    /// ticket back, or its store was unavailable and could not tell.
    private static func confirmed(_ r: FailureReservation) -> Bool { r.refunded || r.degraded }

    private static func seconds(_ ms: Int64) -> Int64 { max(1, TokenBucket.ceilDiv(ms, 1000)) }

    func describe() -> JSONValue {
        let c = client.policy, a = account.policy, b = a.backoff
        return .object(JSONObject([
            ("client", .object(JSONObject([
                ("max_failures", .number(JSONNumber(int64: c.maxFailures))),
                ("window_seconds", .number(JSONNumber(int64: c.windowSeconds))),
                ("block_seconds", .number(JSONNumber(int64: c.blockSeconds))),
                ("failure_policy", .string(c.failurePolicy.rawValue)),
            ]))),
            ("account", .object(JSONObject([
                ("free_failures", .number(JSONNumber(int64: b?.freeFailures ?? 0))),
                ("base_delay_seconds", .number(JSONNumber(int64: (b?.baseDelayMs ?? 0) / 1000))),
                ("max_delay_seconds", .number(JSONNumber(int64: (b?.maxDelayMs ?? 0) / 1000))),
                ("max_failures", .number(JSONNumber(int64: a.maxFailures))),
                ("window_seconds", .number(JSONNumber(int64: a.windowSeconds))),
                ("failure_policy", .string(a.failurePolicy.rawValue)),
            ]))),
            ("ipv4_prefix", .number(JSONNumber(int64: Int64(ipv4Prefix)))),
            ("ipv6_prefix", .number(JSONNumber(int64: Int64(ipv6Prefix)))),
            ("network_ipv6_prefix", .number(JSONNumber(int64: Int64(networkPrefix)))),
            ("network_max_failures", .number(JSONNumber(int64: networkMaxFailures))),
        ]))
    }
}
