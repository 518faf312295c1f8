/// Why a password is refused by the policy (bit flags: several can apply at once).
public struct PasswordPolicyReasons: OptionSet, Sendable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public static let tooShort = PasswordPolicyReasons(rawValue: 1)
    public static let tooLong = PasswordPolicyReasons(rawValue: 2)
    public static let blocklisted = PasswordPolicyReasons(rawValue: 4)
}

/// The policy's decision: `reasons` empty means accepted; `length` is in Unicode code points.
public struct PasswordPolicyDecision: Sendable {
    public let reasons: PasswordPolicyReasons
    public let length: Int
    public var accepted: Bool { reasons.isEmpty }
}

/// NIST SP 800-63B-4 §3.1.1.2 password rules: a minimum length (15 for a password used alone,
/// 8 when it is one factor of several), a maximum of at least 64, lengths counted in Unicode
/// code points of the (NFKC-normalised) UTF-8 text, no composition rules, and a blocklist of
/// common and breached passwords compared case-insensitively.
///
/// Normalisation: the core does not normalise (it has no Unicode tables); callers pass NFKC
/// text (the Python binding normalises with `unicodedata`), and the same text is hashed, so
/// the length checked here is the length of what is stored.
public struct PasswordPolicy: Sendable {
    public let minLength: Int
    public let minLengthMFA: Int
    public let maxLength: Int
    let blocklist: Set<String>
    public var blocklistCount: Int { blocklist.count }
    public let blocklistFile: String?

    /// The longest blocklist file read, and the longest entry (longer lines are refused).
    public static let maxBlocklistFileBytes = 256 << 20
    public static let maxEntryBytes = 1024

    /// Unicode code points of valid UTF-8 (bytes that do not continue a sequence).
    public static func codePoints(_ b: UnsafeRawBufferPointer) -> Int {
        var n = 0
        for c in b where c & 0xC0 != 0x80 { n += 1 }
        return n
    }

    public func check(_ password: UnsafeRawBufferPointer, mfa: Bool) -> PasswordPolicyDecision {
        let n = Self.codePoints(password)
        var r: PasswordPolicyReasons = []
        if n < (mfa ? minLengthMFA : minLength) { r.insert(.tooShort) }
        if n > maxLength { r.insert(.tooLong) }
        if !blocklist.isEmpty, n <= maxLength {
            let key = String(decoding: password, as: UTF8.self).lowercased()
            if blocklist.contains(key) { r.insert(.blocklisted) }
        }
        return PasswordPolicyDecision(reasons: r, length: n)
    }

    init(minLength: Int, minLengthMFA: Int, maxLength: Int, builtin: Bool, file: String?, maxFileBytes: Int) throws(BitsecError) {
        self.minLength = minLength
        self.minLengthMFA = minLengthMFA
        self.maxLength = maxLength
        self.blocklistFile = file
        var set = Set<String>()
        if builtin {
            set.reserveCapacity(CommonPasswords.count)
            let t = CommonPasswords.text
            let raw = UnsafeRawBufferPointer(start: t.utf8Start, count: t.utf8CodeUnitCount)
            try Self.addLines(raw, to: &set, source: "built-in list")
        }
        if let file {
            let bytes = try readFile(file, limit: maxFileBytes)
            try bytes.withRawBytes { (raw) throws(BitsecError) in try Self.addLines(raw, to: &set, source: file) }
        }
        blocklist = set
    }

    /// One entry a line (LF or CRLF), UTF-8, stored lower case; empty lines are skipped; a line
    /// longer than `maxEntryBytes` or not UTF-8 refuses the file (a truncated or binary file
    /// must not load as a shorter list).
    static func addLines(_ raw: UnsafeRawBufferPointer, to set: inout Set<String>, source: String) throws(BitsecError) {
        var start = 0
        var line = 1
        let n = raw.count
        while start < n {
            var end = start
            while end < n && raw[end] != 0x0A { end += 1 }
            var stop = end
            if stop > start && raw[stop - 1] == 0x0D { stop -= 1 }
            if stop > start {
                guard stop - start <= maxEntryBytes else {
                    throw .config("passwords.blocklist_file: \(source) line \(line) is longer than \(maxEntryBytes) bytes")
                }
                let entry = UnsafeRawBufferPointer(rebasing: raw[start..<stop])
                guard UTF8Validation.isValid(entry) else {
                    throw .config("passwords.blocklist_file: \(source) line \(line) is not valid UTF-8")
                }
                set.insert(String(decoding: entry, as: UTF8.self).lowercased())
            }
            start = end + 1
            line += 1
        }
    }
}
