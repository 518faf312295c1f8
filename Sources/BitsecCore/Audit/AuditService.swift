/// The `audit` capability. Placeholder of the seam: its implementation is issue 8.
public final class AuditService: Capability, AuditHook {
    public static let sectionName = "audit"

    public static func read(_ o: ConfigObject, context: CapabilityContext) throws(BitsecError) -> AuditService {
        throw BitsecError(.unsupported, "the audit section is not implemented in this version")
    }

    public func describe() -> JSONValue { .object(JSONObject()) }

    public var automaticEventsEnabled: Bool { false }
    public func emitAutomatic(_ event: AutomaticAuditEvent) {}
}
