/// A scrypt hash in the PHC string format (github.com/P-H-C/phc-string-format):
///
///     $scrypt$ln=17,r=8,p=1$<salt>$<hash>
///
/// `ln` is log2(N); salt and hash are standard base64 (`+` and `/`) without padding, the
/// encoding the PHC format names (the one of Python's passlib `scrypt` and of Go's and Rust's
/// PHC-string crates for scrypt; passlib uses `.` for `+`). The parser is strict: the three
/// parameters in this order, decimal without sign or leading zero, canonical base64, bounded
/// sizes. Whether the parameters are affordable is the caller's check (`Scrypt.checkParameters`).
public struct ScryptPHC: Sendable, Equatable {
    public var ln: Int
    public var r: Int
    public var p: Int
    public var salt: [UInt8]
    public var hash: [UInt8]

    /// The longest string parsed (a hash of the largest salt and key is far shorter).
    public static let maxStringBytes = 256
    public static let minSaltBytes = 8, maxSaltBytes = 64
    public static let minHashBytes = 16, maxHashBytes = 64
    static let prefix = Array("$scrypt$".utf8)

    public init(ln: Int, r: Int, p: Int, salt: [UInt8], hash: [UInt8]) {
        self.ln = ln; self.r = r; self.p = p; self.salt = salt; self.hash = hash
    }

    /// Whether the text claims to be a scrypt PHC string (another scheme is not an error for
    /// needs-rehash: the service may still verify it itself).
    public static func isScrypt(_ s: UnsafeRawBufferPointer) -> Bool {
        s.count >= prefix.count && prefix.indices.allSatisfy { s[$0] == prefix[$0] }
    }

    /// Parses a PHC string. Errors: `.unsupported` (another scheme), `.tooLarge`, `.malformed`
    /// (the detail names the part, never the value).
    public static func parse(_ s: UnsafeRawBufferPointer) throws(BitsecError) -> ScryptPHC {
        guard s.count <= maxStringBytes else { throw .tooLarge("password hash: longer than \(maxStringBytes) bytes") }
        guard s.count > 0, s[0] == UInt8(ascii: "$") else { throw .malformed("password hash: not a PHC string") }
        guard isScrypt(s) else { throw BitsecError(.unsupported, "password hash: not a scrypt PHC string") }
        // The four '$'-separated parts after "$scrypt$": parameters, salt, hash.
        var parts: [ArraySlice<UInt8>] = []
        var cur: [UInt8] = []
        for i in prefix.count..<s.count {
            let c = s[i]
            if c == UInt8(ascii: "$") { parts.append(cur[...]); cur = [] } else { cur.append(c) }
            guard parts.count <= 2 else { throw .malformed("password hash: too many fields") }
        }
        parts.append(cur[...])
        guard parts.count == 3 else { throw .malformed("password hash: expected parameters, salt and hash") }
        let params = parts[0].split(separator: UInt8(ascii: ","), omittingEmptySubsequences: false)
        guard params.count == 3 else { throw .malformed("password hash: expected the parameters ln, r, p") }
        let ln = try number(params[0], "ln", max: 62)
        let r = try number(params[1], "r", max: Int(UInt32.max))
        let p = try number(params[2], "p", max: Int(UInt32.max))
        guard let salt = Base64.decodeStdStrict(parts[1]) else { throw .malformed("password hash: salt is not unpadded base64") }
        guard salt.count >= minSaltBytes, salt.count <= maxSaltBytes else {
            throw .malformed("password hash: salt must be \(minSaltBytes) to \(maxSaltBytes) bytes")
        }
        guard let hash = Base64.decodeStdStrict(parts[2]) else { throw .malformed("password hash: hash is not unpadded base64") }
        guard hash.count >= minHashBytes, hash.count <= maxHashBytes else {
            throw .malformed("password hash: hash must be \(minHashBytes) to \(maxHashBytes) bytes")
        }
        return ScryptPHC(ln: ln, r: r, p: p, salt: salt, hash: hash)
    }

    /// `name=digits`, no sign, no leading zero, 1 ... max.
    private static func number(_ field: ArraySlice<UInt8>, _ name: StaticString, max: Int) throws(BitsecError) -> Int {
        let key = Array("\(name)=".utf8)
        guard field.count > key.count, field.prefix(key.count).elementsEqual(key) else {
            throw .malformed("password hash: expected parameter \(name)")
        }
        let digits = field.dropFirst(key.count)
        guard digits.count <= 10, digits.first != UInt8(ascii: "0") else { throw .malformed("password hash: \(name) out of range") }
        var v = 0
        for d in digits {
            guard d >= UInt8(ascii: "0"), d <= UInt8(ascii: "9") else { throw .malformed("password hash: \(name) is not a number") }
            v = v * 10 + Int(d - UInt8(ascii: "0"))  // at most 10 digits: no overflow in Int64
        }
        guard v >= 1, v <= max else { throw .malformed("password hash: \(name) out of range") }
        return v
    }

    /// The PHC string.
    public var text: [UInt8] {
        var out = Array("$scrypt$ln=\(ln),r=\(r),p=\(p)$".utf8)
        Base64.encode(salt, into: &out, urlSafe: false, padded: false)
        out.append(UInt8(ascii: "$"))
        Base64.encode(hash, into: &out, urlSafe: false, padded: false)
        return out
    }
}
