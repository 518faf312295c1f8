/// The `fields` capability. Placeholder of the seam: its implementation is issue 7.
public final class FieldService: Capability {
    public static let sectionName = "fields"

    public static func read(_ o: ConfigObject, context: CapabilityContext) throws(BitsecError) -> FieldService {
        throw BitsecError(.unsupported, "the fields section is not implemented in this version")
    }

    public func describe() -> JSONValue { .object(JSONObject()) }
}
