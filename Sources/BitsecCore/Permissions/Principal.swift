/// A principal and a resource context as Swift values, packed into the C ABI's formats
/// (`PrincipalView`, `ResourceContext`). For Swift callers and tests; the ABI hot path
/// reads the caller's bytes directly.
public struct Principal: Sendable {
    public var id: String
    public var roles: [String]
    public var tenant: String
    public var department: String
    /// nil: the principal carries no scopes (roles alone decide).
    public var scopes: [String]?

    public init(id: String = "", roles: [String], tenant: String = "", department: String = "", scopes: [String]? = nil) {
        self.id = id
        self.roles = roles
        self.tenant = tenant
        self.department = department
        self.scopes = scopes
    }

    public var packed: [UInt8] {
        var b = Array(id.utf8)
        b.append(0); b += Array(roles.joined(separator: " ").utf8)
        b.append(0); b += Array(tenant.utf8)
        b.append(0); b += Array(department.utf8)
        if let scopes { b.append(0); b += Array(scopes.joined(separator: " ").utf8) }
        return b
    }
}

public struct ResourceAttributes: Sendable {
    public var ownerId: String
    public var tenant: String
    public var department: String

    public init(ownerId: String = "", tenant: String = "", department: String = "") {
        self.ownerId = ownerId
        self.tenant = tenant
        self.department = department
    }

    public var packed: [UInt8] {
        var b = Array(ownerId.utf8)
        b.append(0); b += Array(tenant.utf8)
        b.append(0); b += Array(department.utf8)
        return b
    }
}

extension PermissionService {
    /// Convenience for Swift callers: packs, then decides through the same path as the ABI.
    public func check(_ principal: Principal, _ permission: String, context: ResourceAttributes? = nil) throws(BitsecError) -> PermissionDecision {
        let p = principal.packed
        let c = context?.packed ?? []
        let perm = Array(permission.utf8)
        return try p.withRawBytes { (pr) throws(BitsecError) in
            try c.withRawBytes { (cr) throws(BitsecError) in
                try perm.withRawBytes { (permr) throws(BitsecError) in
                    let pv = try PrincipalView.parse(pr)
                    let cv = try ResourceContext.parse(cr)
                    return try check(pv, permission: ByteSlice(permr.baseAddress?.assumingMemoryBound(to: UInt8.self), permr.count), cv)
                }
            }
        }
    }

    public func checkBatch(_ principal: Principal, _ permissions: [String], context: ResourceAttributes? = nil) throws(BitsecError) -> [PermissionDecision] {
        let p = principal.packed
        let c = context?.packed ?? []
        let list = Array(permissions.joined(separator: "\n").utf8)
        var out = [UInt64](repeating: 0, count: permissions.count)
        let n = try p.withRawBytes { (pr) throws(BitsecError) in
            try c.withRawBytes { (cr) throws(BitsecError) in
                try list.withRawBytes { (lr) throws(BitsecError) in
                    let pv = try PrincipalView.parse(pr)
                    let cv = try ResourceContext.parse(cr)
                    let r = out.withUnsafeMutableBufferPointer { ob in
                        Result { () throws(BitsecError) in
                            try checkBatch(pv, permissions: ByteSlice(lr.baseAddress?.assumingMemoryBound(to: UInt8.self), lr.count), cv,
                                           into: ob.baseAddress, capacity: ob.count)
                        }
                    }
                    return try r.get()
                }
            }
        }
        return out.prefix(max(n, 0)).map { PermissionDecision(raw: $0) }
    }

    public func loadPolicy(_ json: String) throws(BitsecError) {
        try Array(json.utf8).withRawBytes { (r) throws(BitsecError) in try loadPolicy(r) }
    }

    public func loadShadowPolicy(_ json: String?) throws(BitsecError) {
        try Array((json ?? "").utf8).withRawBytes { (r) throws(BitsecError) in try loadShadowPolicy(r) }
    }
}
