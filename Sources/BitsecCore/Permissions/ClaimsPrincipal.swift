/// A principal from a verified token's claims as JSON (`bitsec_check_permission_claims`):
/// the same reading as the Python binding's `Principal.from_claims`.
///
/// - id: `sub`, else `user_id` (a string, or an integer written in decimal);
/// - roles: `roles` (array of strings, or one string) then `role` (string or array);
///   a value that is empty or contains a separator (space, comma, tab, newline) or NUL names
///   no policy role and is dropped;
/// - scopes: the first of `scope` (OAuth2: one space-separated string), `scopes`, `scp`
///   (string or array) that is present and not null; present means the principal carries
///   scopes, even an empty list;
/// - tenant: `tenant_id`, else `tenant`; department: `department` (strings).
/// Other claims are ignored. A NUL in the id, tenant, department or scopes is refused.
public enum ClaimsPrincipal {
    public static let maxClaimsBytes = 64 << 10

    /// The packed principal (`PrincipalView` format) of a claims document.
    public static func pack(_ json: UnsafeRawBufferPointer) throws(BitsecError) -> [UInt8] {
        let doc: JSONValue
        do {
            // One level more than a token's claims may nest: bitsec_verify_token's result
            // document wraps the claims in one object and must be accepted as it is.
            doc = try JSONReader.parse(json, options: .init(maxBytes: maxClaimsBytes, maxDepth: Limits.maxJSONDepth + 1))
        } catch {
            throw BitsecError(error.status == .tooLarge ? .tooLarge : .malformed, "claims: \(error.detail)")
        }
        guard case .object(let o) = doc else { throw .malformed("claims must be a JSON object") }

        func text(_ v: JSONValue?) -> String? {
            switch v {
            case .string(let s)?: return s
            case .number(let n)?: return n.int64.map { String($0) }
            default: return nil
            }
        }
        func strings(_ v: JSONValue?) -> [String]? {
            switch v {
            case .string(let s)?: return [s]
            case .array(let a)?: return a.compactMap { $0.stringValue }
            default: return nil
            }
        }
        let id = text(o["sub"]) ?? text(o["user_id"]) ?? ""
        var roles: [String] = []
        for key in ["roles", "role"] {
            for r in strings(o[key]) ?? [] where !r.isEmpty && !r.utf8.contains(where: { $0 == 0 || ByteSlice.isSeparator($0) }) {
                roles.append(r)
            }
        }
        var scopes: String? = nil
        for key in ["scope", "scopes", "scp"] {
            guard let v = o[key], !v.isNull else { continue }
            if case .string(let s) = v { scopes = s } else { scopes = (strings(v) ?? []).joined(separator: " ") }
            break
        }
        let tenant = o["tenant_id"]?.stringValue ?? o["tenant"]?.stringValue ?? ""
        let department = o["department"]?.stringValue ?? ""
        for (name, value) in [("sub", id), ("tenant_id", tenant), ("department", department), ("scope", scopes ?? "")]
        where value.utf8.contains(0) {
            throw .invalid("claims: \(name) contains NUL")
        }
        return Principal(id: id, roles: roles, tenant: tenant, department: department,
                         scopes: scopes.map { [$0] }).packed
    }
}
