/// A policy as written: declared resources and actions, roles with their grants, deny rules
/// and inheritance, validated strictly (unknown fields, unknown names, cycles are errors).
/// `CompiledPolicy` turns it into the decision index.
///
/// ```json
/// {
///   "resources": ["inspections", "defects"],
///   "actions": ["create", "read", "update", "delete"],
///   "tenant_isolation": true,
///   "scope_actions": {"write": ["create", "update", "delete"]},
///   "roles": {
///     "viewer":   {"allow": ["*:read"]},
///     "operator": {"inherits": ["viewer"],
///                  "allow": ["inspections:create",
///                            {"permission": "inspections:update", "owner_only": true}],
///                  "deny": ["defects:delete"]}
///   },
///   "deny": [{"permission": "system:delete", "roles": ["operator"]}]
/// }
/// ```
struct PolicyDocument {
    /// The closed set of conditions a grant may carry. No expression language, no `eval`.
    struct Conditions: Hashable {
        /// The resource's owner (context `owner_id`) must be the principal.
        var ownerOnly = false
        /// The principal's department must equal this value.
        var department: String? = nil
        /// The principal's department must equal the resource's (context `department`).
        var sameDepartment = false
        /// Tenant isolation is waived for this grant (a platform operator's role).
        var crossTenant = false

        var summary: String {
            var parts: [String] = []
            if ownerOnly { parts.append("owner_only") }
            if let department { parts.append("department=\(department)") }
            if sameDepartment { parts.append("same_department") }
            if crossTenant { parts.append("cross_tenant") }
            return parts.joined(separator: ",")
        }
    }

    struct Rule {
        let deny: Bool
        let resource: Int  // -1: every resource
        let action: Int  // -1: every action
        let conditions: Conditions
        let text: String
    }

    static let maxNameBytes = 128
    static let maxResources = 65_536
    static let maxActions = 1_024
    static let maxRoles = 65_536
    static let maxRules = 1_000_000

    var resources: [String] = []
    var actions: [String] = []
    var roles: [String] = []
    var inherits: [[Int]] = []
    var roleRules: [[Int]] = []
    var rules: [Rule] = []
    var tenantIsolation = true
    var scopeVerbs: [String] = []
    var scopeVerbActions: [[Int]] = []

    static func parse(_ bytes: UnsafeRawBufferPointer, path: String) throws(BitsecError) -> PolicyDocument {
        let doc: JSONValue
        do {
            doc = try JSONReader.parse(bytes, options: .init(maxBytes: Limits.maxConfigBytes, maxDepth: Limits.maxJSONDepth))
        } catch {
            throw BitsecError(error.status == .tooLarge ? .tooLarge : .config, "\(path): \(error.detail)")
        }
        return try read(try ConfigObject(doc, path: path))
    }

    static func read(_ o: ConfigObject) throws(BitsecError) -> PolicyDocument {
        var d = PolicyDocument()
        d.resources = try names(o, "resources", max: maxResources)
        d.actions = try names(o, "actions", max: maxActions)
        d.tenantIsolation = try o.bool("tenant_isolation", default: true)
        let resourceIndex = Dictionary(uniqueKeysWithValues: d.resources.enumerated().map { ($1, $0) })
        let actionIndex = Dictionary(uniqueKeysWithValues: d.actions.enumerated().map { ($1, $0) })

        if let sa = try o.object("scope_actions") {
            for verb in sa.keys {
                try checkName(verb, "\(sa.fieldPath(verb)) (a scope verb)")
                guard actionIndex[verb] == nil else {
                    throw .config("\(sa.fieldPath(verb)): \(verb) is already an action")
                }
                var ids: [Int] = []
                for a in try sa.stringArray(verb) ?? [] {
                    guard let i = a == "*" ? -1 : actionIndex[a] else { throw .config("\(sa.fieldPath(verb)): unknown action \(a)") }
                    if i < 0 { ids = Array(0..<d.actions.count) } else { ids.append(i) }
                }
                d.scopeVerbs.append(verb)
                d.scopeVerbActions.append(ids)
            }
            try sa.finish()
        }

        guard let ro = try o.object("roles") else { throw .config("\(o.fieldPath("roles")) is required") }
        d.roles = ro.keys
        guard !d.roles.isEmpty else { throw .config("\(ro.path) must declare at least one role") }
        guard d.roles.count <= maxRoles else { throw .config("\(ro.path): more than \(maxRoles) roles") }
        for r in d.roles { try checkName(r, "\(ro.fieldPath(r)) (a role name)") }
        let roleIndex = Dictionary(uniqueKeysWithValues: d.roles.enumerated().map { ($1, $0) })
        d.inherits = Array(repeating: [], count: d.roles.count)
        d.roleRules = Array(repeating: [], count: d.roles.count)

        func pattern(_ text: String, _ where_: String) throws(BitsecError) -> (Int, Int) {
            let parts = text.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
            guard parts.count == 2 else { throw .config("\(where_): \(text) is not resource:action") }
            let (rs, acts) = (String(parts[0]), String(parts[1]))
            let r: Int
            if rs == "*" { r = -1 } else if let i = resourceIndex[rs] { r = i } else {
                throw .config("\(where_): unknown resource \(rs)")
            }
            let a: Int
            if acts == "*" { a = -1 } else if let i = actionIndex[acts] { a = i } else {
                throw .config("\(where_): unknown action \(acts)")
            }
            return (r, a)
        }

        for (ri, role) in d.roles.enumerated() {
            guard let r = try ro.object(role) else { throw .config("\(ro.fieldPath(role)) must be an object") }
            for parent in try r.stringArray("inherits") ?? [] {
                guard let pi = roleIndex[parent] else { throw .config("\(r.fieldPath("inherits")): unknown role \(parent)") }
                if !d.inherits[ri].contains(pi) { d.inherits[ri].append(pi) }
            }
            if let allow = try r.array("allow") {
                for (k, item) in allow.enumerated() {
                    let where_ = "\(r.fieldPath("allow"))[\(k)]"
                    var cond = Conditions()
                    let perm: String
                    switch item {
                    case .string(let s):
                        perm = s
                    case .object:
                        let g = try ConfigObject(item, path: where_)
                        perm = try g.requiredString("permission")
                        cond.ownerOnly = try g.bool("owner_only", default: false)
                        cond.sameDepartment = try g.bool("same_department", default: false)
                        cond.department = try g.string("department")
                        if let dep = cond.department, dep.isEmpty { throw .config("\(g.fieldPath("department")) must not be empty") }
                        cond.crossTenant = try g.bool("cross_tenant", default: false)
                        try g.finish()
                    default:
                        throw .config("\(where_) must be a string or an object, got \(item.typeName)")
                    }
                    let (res, act) = try pattern(perm, where_)
                    let suffix = cond.summary.isEmpty ? "" : " if \(cond.summary)"
                    try d.add(Rule(deny: false, resource: res, action: act, conditions: cond, text: "\(role): allow \(perm)\(suffix)"), to: [ri])
                }
            }
            for (k, perm) in (try r.stringArray("deny") ?? []).enumerated() {
                let (res, act) = try pattern(perm, "\(r.fieldPath("deny"))[\(k)]")
                try d.add(Rule(deny: true, resource: res, action: act, conditions: Conditions(), text: "\(role): deny \(perm)"), to: [ri])
            }
            try r.finish()
        }
        try ro.finish()

        if let deny = try o.array("deny") {
            for (k, item) in deny.enumerated() {
                let where_ = "\(o.fieldPath("deny"))[\(k)]"
                let perm: String
                var targets = Array(0..<d.roles.count)
                var label = "every role"
                switch item {
                case .string(let s):
                    perm = s
                case .object:
                    let g = try ConfigObject(item, path: where_)
                    perm = try g.requiredString("permission")
                    if let names = try g.stringArray("roles") {
                        targets = []
                        for n in names {
                            guard let i = roleIndex[n] else { throw .config("\(g.fieldPath("roles")): unknown role \(n)") }
                            targets.append(i)
                        }
                        label = names.joined(separator: ",")
                    }
                    try g.finish()
                default:
                    throw .config("\(where_) must be a string or an object, got \(item.typeName)")
                }
                let (res, act) = try pattern(perm, where_)
                try d.add(Rule(deny: true, resource: res, action: act, conditions: Conditions(), text: "deny \(perm) for \(label)"), to: targets)
            }
        }
        _ = o.value("description")  // free text for people
        try o.finish()
        return d
    }

    private mutating func add(_ rule: Rule, to roles: [Int]) throws(BitsecError) {
        guard rules.count < Self.maxRules else { throw .config("policy: more than \(Self.maxRules) rules") }
        rules.append(rule)
        for r in roles { roleRules[r].append(rules.count - 1) }
    }

    private static func names(_ o: ConfigObject, _ key: String, max: Int) throws(BitsecError) -> [String] {
        guard let list = try o.stringArray(key) else { throw .config("\(o.fieldPath(key)) is required") }
        guard !list.isEmpty else { throw .config("\(o.fieldPath(key)) must not be empty") }
        guard list.count <= max else { throw .config("\(o.fieldPath(key)): more than \(max) names") }
        var seen = Set<String>()
        for (i, n) in list.enumerated() {
            try checkName(n, "\(o.fieldPath(key))[\(i)]")
            guard seen.insert(n).inserted else { throw .config("\(o.fieldPath(key)): \(n) is declared twice") }
        }
        return list
    }

    /// Names are 1-128 bytes of printable non-space characters other than `,`, `:` and `*`
    /// (the separators and wildcard of the request formats).
    static func checkName(_ n: String, _ where_: String) throws(BitsecError) {
        let u = n.utf8
        guard !u.isEmpty, u.count <= maxNameBytes else { throw .config("\(where_): a name must have 1 to \(maxNameBytes) bytes") }
        for b in u where b <= 0x20 || b == 0x7F || b == 0x2C || b == 0x3A || b == 0x2A {
            throw .config("\(where_): \(n) contains a space, control character, ',', ':' or '*'")
        }
    }

    /// Each role's ancestors (itself first, then everything it inherits, transitively).
    /// A cycle is an error naming the roles on it.
    func closures() throws(BitsecError) -> [[Int]] {
        var state = Array(repeating: 0, count: roles.count)  // 0 new, 1 on the stack, 2 done
        var order: [Int] = []
        var stack: [Int] = []
        func visit(_ r: Int) throws(BitsecError) {
            if state[r] == 2 { return }
            if state[r] == 1 {
                let start = stack.firstIndex(of: r) ?? 0
                let cycle = (stack[start...] + [r]).map { roles[$0] }.joined(separator: " -> ")
                throw .config("policy: role inheritance cycle: \(cycle)")
            }
            state[r] = 1
            stack.append(r)
            for p in inherits[r] { try visit(p) }
            stack.removeLast()
            state[r] = 2
            order.append(r)
        }
        for r in 0..<roles.count { try visit(r) }
        // `order` lists parents before children: each closure is built from finished ones.
        var closure: [[Int]] = Array(repeating: [], count: roles.count)
        var total = 0
        for r in order {
            var seen = Set<Int>([r])
            var list = [r]
            for p in inherits[r] {
                for a in closure[p] where seen.insert(a).inserted { list.append(a) }
            }
            total += list.count
            guard total <= CompiledPolicy.maxExpansions else {
                throw .config("policy: the role inheritance closure exceeds \(CompiledPolicy.maxExpansions) (role, ancestor) pairs")
            }
            closure[r] = list
        }
        return closure
    }
}
