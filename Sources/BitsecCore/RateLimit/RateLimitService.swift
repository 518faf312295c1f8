/// The `rate_limits` capability. Placeholder of the seam: its implementation is issue 5.
public final class RateLimitService: Capability {
    public static let sectionName = "rate_limits"

    public static func read(_ o: ConfigObject, context: CapabilityContext) throws(BitsecError) -> RateLimitService {
        throw BitsecError(.unsupported, "the rate_limits section is not implemented in this version")
    }

    public func describe() -> JSONValue { .object(JSONObject()) }
}
