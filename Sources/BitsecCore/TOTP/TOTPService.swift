/// The `totp` capability. Placeholder of the seam: its implementation is issue 6.
public final class TOTPService: Capability {
    public static let sectionName = "totp"

    public static func read(_ o: ConfigObject, context: CapabilityContext) throws(BitsecError) -> TOTPService {
        throw BitsecError(.unsupported, "the totp section is not implemented in this version")
    }

    public func describe() -> JSONValue { .object(JSONObject()) }
}
