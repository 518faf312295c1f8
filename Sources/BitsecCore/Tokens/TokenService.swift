/// The `tokens` capability. Placeholder of the seam: its implementation is issue 3.
public final class TokenService: Capability {
    public static let sectionName = "tokens"

    public static func read(_ o: ConfigObject, context: CapabilityContext) throws(BitsecError) -> TokenService {
        throw BitsecError(.unsupported, "the tokens section is not implemented in this version")
    }

    public func describe() -> JSONValue { .object(JSONObject()) }
}
