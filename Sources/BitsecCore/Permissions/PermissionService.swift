/// The `permissions` capability. Placeholder of the seam: its implementation is issue 4.
public final class PermissionService: Capability {
    public static let sectionName = "permissions"

    public static func read(_ o: ConfigObject, context: CapabilityContext) throws(BitsecError) -> PermissionService {
        throw BitsecError(.unsupported, "the permissions section is not implemented in this version")
    }

    public func describe() -> JSONValue { .object(JSONObject()) }
}
