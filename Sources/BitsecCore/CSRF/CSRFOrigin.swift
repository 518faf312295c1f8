/// The `Origin` / `Sec-Fetch-Site` check for unsafe methods (OWASP CSRF Prevention Cheat
/// Sheet: "Verifying origin with standard headers" and "Fetch Metadata headers").
///
/// For a safe method (`GET`, `HEAD`, `OPTIONS`, `TRACE`) nothing is checked. For any other:
/// 1. an `Origin` in `allowed_origins` (after normalising: lower-case scheme and host, the
///    default port dropped) is accepted;
/// 2. else `Sec-Fetch-Site: same-origin` (the browser vouches that the page is the target's
///    own origin) or `none` (a user-initiated navigation, no initiating site) is accepted;
/// 3. else an `Origin` (including the opaque `null`) is refused as `origin_not_allowed`;
///    `Sec-Fetch-Site: cross-site` or `same-site` alone is refused as `cross_site_request`;
/// 4. neither header: `missing_origin` decides (`refuse`, the default: every current
///    browser sends one of them on an unsafe request, so their absence means an old
///    browser or a non-browser client, and routes protected by cookie sessions are for
///    browsers; `allow`: the token check alone decides).
public struct CSRFOriginPolicy: Sendable {
    /// Normalised `scheme://host[:port]` strings.
    public let allowed: Set<String>
    public let allowMissing: Bool
    /// The longest `Origin` (and method, `Sec-Fetch-Site`) value read; longer is refused.
    public static let maxHeaderBytes = 2048

    public init(allowed: Set<String>, allowMissing: Bool) {
        self.allowed = allowed
        self.allowMissing = allowMissing
    }

    static let safeMethods: Set<String> = ["GET", "HEAD", "OPTIONS", "TRACE"]

    /// The normalised form of an origin (`https://App.Example.com:443` → `https://app.example.com`),
    /// nil when it is not `http(s)://host[:port]` with nothing after.
    public static func normalise(_ text: String) -> String? {
        guard text.utf8.count <= maxHeaderBytes else { return nil }
        let lower = lowerASCII(text)
        let scheme: String, defaultPort: String
        if lower.hasPrefix("https://") { scheme = "https"; defaultPort = "443" }
        else if lower.hasPrefix("http://") { scheme = "http"; defaultPort = "80" }
        else { return nil }
        var host = lower.dropFirst(scheme.count + 3)
        guard !host.isEmpty else { return nil }
        var port: Substring? = nil
        // An IPv6 literal is bracketed; the port follows the closing bracket.
        if host.hasPrefix("[") {
            guard let close = host.firstIndex(of: "]") else { return nil }
            let after = host[host.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":") else { return nil }
                port = after.dropFirst()
            }
            host = host[...close]
        } else if let colon = host.firstIndex(of: ":") {
            port = host[host.index(after: colon)...]
            host = host[..<colon]
        }
        guard !host.isEmpty else { return nil }
        for b in host.utf8 {
            let ok = (b >= 0x61 && b <= 0x7A) || (b >= 0x30 && b <= 0x39) || b == 0x2D || b == 0x2E || b == 0x5B || b == 0x5D || b == 0x3A
            guard ok else { return nil }
        }
        if let p = port {
            guard !p.isEmpty, p.utf8.count <= 5, p.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }), let n = Int(p), n >= 1, n <= 65535 else {
                return nil
            }
            if String(n) != defaultPort { return "\(scheme)://\(host):\(n)" }
        }
        return "\(scheme)://\(host)"
    }

    /// The decision for one request. `origin` and `fetchSite` are nil when the header is
    /// absent (an empty value counts as absent).
    public func check(method: String, origin: String?, fetchSite: String?) -> CSRFReason {
        let m = String(decoding: method.utf8.map { b -> UInt8 in (b >= 0x61 && b <= 0x7A) ? b - 0x20 : b }, as: UTF8.self)
        if Self.safeMethods.contains(m) { return .valid }
        let o = (origin?.isEmpty ?? true) ? nil : origin
        let site = (fetchSite?.isEmpty ?? true) ? nil : fetchSite.map(lowerASCII)
        if let o, let n = Self.normalise(o), allowed.contains(n) { return .valid }
        if let site, site == "same-origin" || site == "none" { return .valid }
        if o != nil { return .originNotAllowed }
        if site != nil { return .crossSite }
        return allowMissing ? .valid : .originMissing
    }
}

/// ASCII letters in lower case, other bytes unchanged.
private func lowerASCII(_ s: String) -> String {
    String(decoding: s.utf8.map { b -> UInt8 in (b >= 0x41 && b <= 0x5A) ? b + 0x20 : b }, as: UTF8.self)
}

extension CSRFOriginPolicy {
    /// The check over raw header bytes (as received; an empty buffer is an absent header).
    /// A value longer than `maxHeaderBytes` or not UTF-8 is never an allowed origin.
    public func check(method: UnsafeRawBufferPointer, origin: UnsafeRawBufferPointer, fetchSite: UnsafeRawBufferPointer) -> CSRFReason {
        func text(_ b: UnsafeRawBufferPointer) -> String? {
            guard b.count > 0 else { return nil }
            // Present but unreadable: a value that matches no origin and no fetch site.
            guard b.count <= Self.maxHeaderBytes else { return "\u{FFFD}" }
            return String(decoding: b.bindMemory(to: UInt8.self), as: UTF8.self)
        }
        let m = method.count <= 64 ? (text(method) ?? "") : ""
        return check(method: m, origin: text(origin), fetchSite: text(fetchSite))
    }
}
