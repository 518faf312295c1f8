/// The Google Authenticator key URI (github.com/google/google-authenticator/wiki/Key-Uri-Format):
///
///     otpauth://totp/Issuer:account?secret=BASE32&issuer=Issuer&algorithm=SHA1&digits=6&period=30
///
/// The issuer and the account are percent-encoded separately (RFC 3986: everything but the
/// unreserved characters, and `@` in the account, becomes `%XX` of its UTF-8 bytes; a space
/// is `%20`, never `+`); the colon between them is literal. Neither may contain a colon (the
/// format has no way to tell it from the separator), nor control characters. The secret is
/// re-encoded as upper-case base32 without padding, whatever form it was given in.
/// algorithm, digits and period are always written, so an app never falls back on its own
/// defaults.
public enum ProvisioningURI {
    public static func make(secret: UnsafeRawBufferPointer, account: String, issuer: String?,
                            params: OTPParameters) throws(BitsecError) -> [UInt8] {
        guard !account.isEmpty else { throw .invalid("account is empty") }
        guard account.utf8.count <= 256 else { throw .tooLarge("account exceeds 256 bytes") }
        try checkLabelPart(account, "account")
        if let issuer {
            guard !issuer.isEmpty else { throw .invalid("issuer is empty (pass none instead)") }
            guard issuer.utf8.count <= 256 else { throw .tooLarge("issuer exceeds 256 bytes") }
            try checkLabelPart(issuer, "issuer")
        }
        // Decoding checks the secret and normalises its case and padding.
        let normalised = try OTP.withSecret(secret, minBits: OTPLimits.minVerifySecretBits) { (key) throws(BitsecError) -> [UInt8] in
            Base32.encode(key)
        }
        var out: [UInt8] = Array("otpauth://totp/".utf8)
        if let issuer {
            percentEncode(issuer, into: &out, keepAt: false)
            out.append(UInt8(ascii: ":"))
        }
        percentEncode(account, into: &out, keepAt: true)
        out += Array("?secret=".utf8)
        out += normalised
        if let issuer {
            out += Array("&issuer=".utf8)
            percentEncode(issuer, into: &out, keepAt: false)
        }
        out += Array("&algorithm=\(params.algorithm.name)&digits=\(params.digits)&period=\(params.period)".utf8)
        return out
    }

    private static func checkLabelPart(_ s: String, _ what: String) throws(BitsecError) {
        for b in s.utf8 {
            if b == UInt8(ascii: ":") { throw .invalid("\(what) must not contain ':' (the issuer:account separator)") }
            if b < 0x20 || b == 0x7F { throw .invalid("\(what) must not contain control characters") }
        }
    }

    private static let hex: [UInt8] = Array("0123456789ABCDEF".utf8)

    static func percentEncode(_ s: String, into out: inout [UInt8], keepAt: Bool) {
        for b in s.utf8 {
            switch b {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
                 UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"):
                out.append(b)
            case UInt8(ascii: "@") where keepAt:
                out.append(b)
            default:
                out.append(UInt8(ascii: "%"))
                out.append(hex[Int(b >> 4)])
                out.append(hex[Int(b & 15)])
            }
        }
    }
}
