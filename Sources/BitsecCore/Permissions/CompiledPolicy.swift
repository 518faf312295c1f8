/// A policy compiled into its decision index. Immutable once built; replaced as a whole.
///
/// Names are interned (`NameTable`); after the inheritance closure and wildcard expansion,
/// every (role, resource, action) has a cell id in one dense matrix. A cell holds the first
/// deny rule that applies, or the allow rules that apply (with their condition ids), and
/// identical cells are shared. A decision is therefore: two name lookups for the
/// permission, one per role of the principal, one matrix load per role, and the conditions
/// of the matching grants only: the same cost with 50 rules or 10,000.
final class CompiledPolicy: @unchecked Sendable {
    /// Cells in the matrix (roles x resources x actions) at most: 16 Mi (64 MiB).
    static let maxCells = 1 << 24
    /// Compilation work at most: (role, rule, cell) expansions, and grants kept in distinct
    /// cells. A policy beyond these is refused instead of compiling for minutes.
    static let maxExpansions = 1 << 25
    static let maxGrants = 1 << 25

    /// Plain data (no reference counting on the hot path); a department value lives in
    /// `departmentBytes` at `departmentOffset` (length -1: no department condition).
    struct Condition {
        var ownerOnly: Bool
        var sameDepartment: Bool
        var tenantIsolation: Bool
        var departmentOffset: Int
        var departmentLength: Int
    }

    let generation: UInt64
    let resources: NameTable
    let actions: NameTable
    let roles: NameTable
    let scopeVerbs: NameTable
    /// Every `resource:action` interned whole (index = resource * actions + action), when
    /// there are at most `maxPermissionNames`: one lookup instead of two on the hot path.
    let permissions: NameTable?
    static let maxPermissionNames = 1 << 16
    let ruleTexts: [String]
    let tenantIsolation: Bool
    private let resourceCount: Int
    private let actionCount: Int
    private let cellsPerRole: Int
    private let matrix: UnsafeMutablePointer<UInt32>
    private let cellDeny: UnsafeMutablePointer<Int32>
    private let cellStart: UnsafeMutablePointer<Int32>  // cellCount + 1
    private let grantRule: UnsafeMutablePointer<Int32>
    private let grantCondition: UnsafeMutablePointer<Int32>
    private let conditions: UnsafeMutablePointer<Condition>
    private let departmentBytes: UnsafeMutablePointer<UInt8>
    private let scopeVerbAllows: UnsafeMutablePointer<Bool>  // verbs x actions
    let cellCount: Int
    let grantCount: Int

    var ruleCount: Int { ruleTexts.count }

    init(_ doc: PolicyDocument, generation: UInt64) throws(BitsecError) {
        self.generation = generation
        let R = doc.resources.count, A = doc.actions.count, N = doc.roles.count
        let (ra, o1) = R.multipliedReportingOverflow(by: A)
        let (total, o2) = ra.multipliedReportingOverflow(by: N)
        guard !o1, !o2, total <= Self.maxCells else {
            throw .config("policy: roles x resources x actions is \(o1 || o2 ? "too large" : String(total)), the limit is \(Self.maxCells)")
        }
        let closures = try doc.closures()

        // Conditions, interned; id 0 is "no condition" (tenant isolation per the policy).
        var condIds: [PolicyDocument.Conditions: Int32] = [PolicyDocument.Conditions(): 0]
        var conds: [Condition] = [Condition(ownerOnly: false, sameDepartment: false, tenantIsolation: doc.tenantIsolation,
                                            departmentOffset: 0, departmentLength: -1)]
        var depts: [UInt8] = []
        var ruleCond: [Int32] = []
        ruleCond.reserveCapacity(doc.rules.count)
        for rule in doc.rules {
            if let id = condIds[rule.conditions] { ruleCond.append(id); continue }
            let id = Int32(conds.count)
            condIds[rule.conditions] = id
            let c = rule.conditions
            var cond = Condition(ownerOnly: c.ownerOnly, sameDepartment: c.sameDepartment,
                                 tenantIsolation: doc.tenantIsolation && !c.crossTenant, departmentOffset: depts.count, departmentLength: -1)
            if let d = c.department {
                cond.departmentLength = d.utf8.count
                depts += Array(d.utf8)
            }
            conds.append(cond)
            ruleCond.append(id)
        }

        // Cells: per role, every rule of its closure, in rule order (first deny wins; grants
        // are tried in the order they were written).
        struct CellKey: Hashable { var deny: Int32; var grants: [Int64] }
        var cellIds: [CellKey: UInt32] = [CellKey(deny: -1, grants: []): 0]
        var cells: [CellKey] = [CellKey(deny: -1, grants: [])]
        let m = UnsafeMutablePointer<UInt32>.allocate(capacity: max(total, 1))
        m.initialize(repeating: 0, count: max(total, 1))
        var deny = [Int32](repeating: -1, count: ra)
        var grants = [[Int64]](repeating: [], count: ra)
        var touched: [Int] = []
        var isTouched = [Bool](repeating: false, count: ra)
        var expansions = 0
        var grantTotal = 0
        for role in 0..<N {
            var ruleIds: [Int] = []
            for a in closures[role] { ruleIds.append(contentsOf: doc.roleRules[a]) }
            ruleIds.sort()
            for ri in ruleIds {
                let rule = doc.rules[ri]
                let rs = rule.resource < 0 ? 0..<R : rule.resource..<(rule.resource + 1)
                let acts = rule.action < 0 ? 0..<A : rule.action..<(rule.action + 1)
                expansions += rs.count * acts.count
                guard expansions <= Self.maxExpansions else {
                    m.deallocate()
                    throw .config("policy: expanding roles, inheritance and wildcards exceeds \(Self.maxExpansions) grants; simplify the policy")
                }
                for r in rs {
                    for a in acts {
                        let k = r * A + a
                        if !isTouched[k] { isTouched[k] = true; touched.append(k) }
                        if rule.deny {
                            if deny[k] < 0 { deny[k] = Int32(ri) }
                        } else {
                            grants[k].append(Int64(ri) << 32 | Int64(ruleCond[ri]))
                        }
                    }
                }
            }
            for k in touched {
                // A denied cell keeps only its deny: no grant can apply there.
                let key = CellKey(deny: deny[k], grants: deny[k] >= 0 ? [] : grants[k])
                let id: UInt32
                if let existing = cellIds[key] { id = existing } else {
                    grantTotal += key.grants.count
                    guard grantTotal <= Self.maxGrants else {
                        m.deallocate()
                        throw .config("policy: more than \(Self.maxGrants) grants in distinct cells; simplify the policy")
                    }
                    id = UInt32(cells.count)
                    cellIds[key] = id
                    cells.append(key)
                }
                m[role * ra + k] = id
                deny[k] = -1
                grants[k].removeAll(keepingCapacity: true)
                isTouched[k] = false
            }
            touched.removeAll(keepingCapacity: true)
        }
        matrix = m
        cellCount = cells.count
        cellDeny = .allocate(capacity: cells.count)
        cellStart = .allocate(capacity: cells.count + 1)
        let g = cells.reduce(0) { $0 + $1.grants.count }
        grantCount = g
        grantRule = .allocate(capacity: max(g, 1))
        grantCondition = .allocate(capacity: max(g, 1))
        var at = 0
        for (i, c) in cells.enumerated() {
            cellDeny[i] = c.deny
            cellStart[i] = Int32(at)
            for x in c.grants {
                grantRule[at] = Int32(truncatingIfNeeded: x >> 32)
                grantCondition[at] = Int32(truncatingIfNeeded: x & 0xFFFF_FFFF)
                at += 1
            }
        }
        cellStart[cells.count] = Int32(at)

        resources = NameTable(doc.resources)
        actions = NameTable(doc.actions)
        roles = NameTable(doc.roles)
        scopeVerbs = NameTable(doc.scopeVerbs)
        if ra <= Self.maxPermissionNames {
            var all: [String] = []
            all.reserveCapacity(ra)
            for r in doc.resources { for a in doc.actions { all.append("\(r):\(a)") } }
            permissions = NameTable(all)
        } else {
            permissions = nil
        }
        let verbs = doc.scopeVerbs.count
        scopeVerbAllows = .allocate(capacity: max(verbs * A, 1))
        scopeVerbAllows.initialize(repeating: false, count: max(verbs * A, 1))
        for (v, ids) in doc.scopeVerbActions.enumerated() { for a in ids { scopeVerbAllows[v * A + a] = true } }
        ruleTexts = doc.rules.map(\.text)
        conditions = .allocate(capacity: conds.count)
        conditions.initialize(from: conds, count: conds.count)
        departmentBytes = .allocate(capacity: max(depts.count, 1))
        departmentBytes.initialize(from: depts, count: depts.count)
        tenantIsolation = doc.tenantIsolation
        resourceCount = R
        actionCount = A
        cellsPerRole = ra
    }

    deinit {
        matrix.deallocate()
        cellDeny.deallocate()
        cellStart.deallocate()
        grantRule.deallocate()
        grantCondition.deallocate()
        scopeVerbAllows.deallocate()
        conditions.deallocate()
        departmentBytes.deallocate()
    }

    /// Decides `permission` (`resource:action`) for `p`; nil when it has no `:`.
    @inline(__always)
    func decide(_ p: PrincipalView, permission: ByteSlice, _ ctx: ResourceContext, unknownRoles: inout Int) -> PermissionDecision? {
        if let table = permissions {
            let k = table.lookup(permission)
            if k >= 0 { return decide(p, cell: k, ctx, unknownRoles: &unknownRoles) }
        }
        guard let colon = permission.firstIndex(of: 0x3A) else { return nil }
        return decide(p, resource: permission.prefix(colon), action: permission.suffix(after: colon), ctx, unknownRoles: &unknownRoles)
    }

    /// Decides `permission` (`resource:action`, already split by the caller) for `p`.
    /// `unknownRoles` is increased by the number of the principal's roles this policy does
    /// not know (they are ignored).
    @inline(__always)
    func decide(_ p: PrincipalView, resource: ByteSlice, action: ByteSlice, _ ctx: ResourceContext,
                unknownRoles: inout Int) -> PermissionDecision {
        let rid = resources.lookup(resource)
        if rid < 0 { return PermissionDecision(.unknownResource, rule: -1, generation: generation) }
        let aid = actions.lookup(action)
        if aid < 0 { return PermissionDecision(.unknownAction, rule: -1, generation: generation) }
        return decide(p, cell: rid * actionCount + aid, ctx, unknownRoles: &unknownRoles)
    }

    /// `cell` is resource * actions + action.
    func decide(_ p: PrincipalView, cell: Int, _ ctx: ResourceContext, unknownRoles: inout Int) -> PermissionDecision {
        var granted: Int32 = -1
        var failure: PermissionReason? = nil
        var failureRule: Int32 = -1
        // The roles, tokenised in place (spaces, tabs, commas).
        if let b = p.roles.base {
            let n = p.roles.count
            var i = 0
            while i < n {
                while i < n, ByteSlice.isSeparator(b[i]) { i += 1 }
                let start = i
                while i < n, !ByteSlice.isSeparator(b[i]) { i += 1 }
                if i == start { break }
                let role = roles.lookup(ByteSlice(b + start, i - start))
                if role < 0 { unknownRoles += 1; continue }
                let c = Int(matrix[role * cellsPerRole + cell])
                if c == 0 { continue }
                let d = cellDeny[c]
                if d >= 0 { return PermissionDecision(.deniedByRule, rule: d, generation: generation) }
                if granted >= 0 { continue }  // still looking for a deny among the other roles
                var g = Int(cellStart[c])
                let end = Int(cellStart[c + 1])
                while g < end {
                    let why = check(Int(grantCondition[g]), p, ctx)
                    if why == nil { granted = grantRule[g]; break }
                    if failure == nil { failure = why; failureRule = grantRule[g] }
                    g += 1
                }
            }
        }
        if granted >= 0 {
            if p.hasScopes && !scopesAllow(p.scopes, rid: cell / actionCount, aid: cell % actionCount) {
                return PermissionDecision(.scopeMissing, rule: granted, generation: generation)
            }
            return PermissionDecision(.granted, rule: granted, generation: generation)
        }
        if let failure { return PermissionDecision(failure, rule: failureRule, generation: generation) }
        return PermissionDecision(.noGrant, rule: -1, generation: generation)
    }

    /// nil when the grant's conditions hold, else the first that fails.
    @inline(__always)
    private func check(_ id: Int, _ p: PrincipalView, _ ctx: ResourceContext) -> PermissionReason? {
        let c = conditions[id]
        // Tenant isolation applies whenever the resource carries a tenant.
        if c.tenantIsolation, !ctx.tenant.isEmpty, !ctx.tenant.equals(p.tenant) { return .tenantMismatch }
        if c.ownerOnly, ctx.owner.isEmpty || !ctx.owner.equals(p.id) { return .ownerOnly }
        if c.departmentLength >= 0, !p.department.equals(UnsafePointer(departmentBytes + c.departmentOffset), c.departmentLength) {
            return .department
        }
        if c.sameDepartment, ctx.department.isEmpty || !ctx.department.equals(p.department) { return .department }
        return nil
    }

    /// OAuth2 scopes: `resource:action`, with `*` for either part, a scope verb of
    /// `scope_actions` as the action part (`inspections:write`), and a bare `action` or verb
    /// meaning `*:action`. Other scopes (`openid`, ...) allow nothing here.
    func scopesAllow(_ scopes: ByteSlice, rid: Int, aid: Int) -> Bool {
        var ok = false
        scopes.forEachToken { t in
            let rpart: ByteSlice, apart: ByteSlice
            if let colon = t.firstIndex(of: 0x3A) {
                rpart = t.prefix(colon)
                apart = t.suffix(after: colon)
                if !(rpart.isStar || resources.matches(rid, rpart)) { return true }
            } else {
                apart = t
            }
            if apart.isStar || actions.matches(aid, apart) { ok = true; return false }
            let v = scopeVerbs.lookup(apart)
            if v >= 0, scopeVerbAllows[v * actionCount + aid] { ok = true; return false }
            return true
        }
        return ok
    }

    /// For `describe` and stats.
    func summary() -> [(key: String, value: JSONValue)] {
        func n(_ i: Int) -> JSONValue { .number(JSONNumber(int64: Int64(i))) }
        return [("generation", n(Int(generation))), ("roles", n(roles.count)), ("resources", n(resourceCount)),
                ("actions", n(actionCount)), ("rules", n(ruleTexts.count)), ("cells", n(cellCount)),
                ("tenant_isolation", .bool(tenantIsolation))]
    }
}
