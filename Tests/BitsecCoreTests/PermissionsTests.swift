import Testing
import Glibc
import Dispatch
import BitsecCore

/// The repository's root, from this file's path.
private let repoRoot: String = {
    var parts = String(#filePath).split(separator: "/", omittingEmptySubsequences: false)
    parts.removeLast(3)  // Tests/BitsecCoreTests/PermissionsTests.swift
    return parts.joined(separator: "/")
}()

private func service(policyFile name: String) throws -> PermissionService {
    let rt = try Runtime.open(config: #"{"permissions": {"policy_file": "\#(repoRoot)/examples/policies/\#(name)"}}"#)
    return try rt.require(rt.permissions)
}

private func service(_ policy: String, extra: String = "") throws -> PermissionService {
    let rt = try Runtime.open(config: #"{"permissions": {"policy": \#(policy)\#(extra)}}"#)
    return try rt.require(rt.permissions)
}

private let adrResources = ["inspections", "defects", "reports", "artifacts", "users", "system"]
private let adrActions = ["create", "read", "update", "delete", "execute"]

@Suite struct PermissionTableTests {
    /// ADR-007's table, every role x resource x action.
    @Test func adr007EveryRoleResourceAction() throws {
        let svc = try service(policyFile: "adr007.json")
        let table: [String: Set<String>] = [
            "operator": ["inspections:read", "inspections:create", "defects:read", "artifacts:read"],
            "quality_engineer": ["inspections:read", "inspections:create", "inspections:update", "defects:read",
                                 "defects:update", "reports:read", "reports:create", "artifacts:read"],
            "manager": ["inspections:read", "defects:read", "reports:read", "reports:create", "users:read", "artifacts:read"],
        ]
        var checked = 0
        for role in ["operator", "quality_engineer", "manager", "admin"] {
            for r in adrResources {
                for a in adrActions {
                    let perm = "\(r):\(a)"
                    let d = try svc.check(Principal(id: "u1", roles: [role], tenant: "acme"), perm)
                    let expected = role == "admin" || table[role]!.contains(perm)
                    #expect(d.allowed == expected, "\(role) \(perm)")
                    #expect(d.reason == (expected ? .granted : .noGrant), "\(role) \(perm)")
                    if expected { #expect(try svc.ruleText(d).hasPrefix("\(role): allow ")) }
                    checked += 1
                }
            }
        }
        #expect(checked == 4 * 6 * 5)
    }

    /// The ERP hierarchy: every role x resource x action, without and with a context that
    /// satisfies the conditions.
    @Test func erpHierarchyEveryRoleResourceAction() throws {
        let svc = try service(policyFile: "erp.json")
        let resources = ["equipment", "maintenance_records", "customers", "reports", "users", "audit_logs", "system"]
        let actions = ["create", "read", "update", "delete", "approve", "export"]
        let viewer: Set<String> = ["equipment:read", "maintenance_records:read", "reports:read"]
        let operatorOwn = viewer.union(["equipment:update", "maintenance_records:create"])
        let managerOwn = operatorOwn.union(["equipment:create", "maintenance_records:update", "reports:create", "customers:read"])
        var adminAll = managerOwn.union(["audit_logs:read"])
        for r in ["equipment", "maintenance_records", "customers", "reports", "users"] { for a in actions { adminAll.insert("\(r):\(a)") } }
        func expected(_ role: String, _ perm: String, satisfied: Bool) -> PermissionReason {
            if perm == "audit_logs:update" || perm == "audit_logs:delete" {
                return ["viewer", "operator", "manager"].contains(role) ? .deniedByRule : .deniedByRule
            }
            if perm == "system:delete" && (role == "admin" || role == "super_admin") { return .deniedByRule }
            switch role {
            case "super_admin": return .granted
            case "admin": return adminAll.contains(perm) ? .granted : .noGrant
            case "manager":
                if managerOwn.contains(perm) { return .granted }
                if perm == "maintenance_records:approve" || perm == "reports:export" { return satisfied ? .granted : .department }
                if perm == "customers:update" { return satisfied ? .granted : .department }
                return .noGrant
            case "operator":
                if operatorOwn.contains(perm) { return .granted }
                if perm == "maintenance_records:update" { return satisfied ? .granted : .ownerOnly }
                return .noGrant
            default:
                return viewer.contains(perm) ? .granted : .noGrant
            }
        }
        for role in ["viewer", "operator", "manager", "admin", "super_admin"] {
            for r in resources {
                for a in actions {
                    let perm = "\(r):\(a)"
                    // Unsatisfied: no context, principal in engineering.
                    let d0 = try svc.check(Principal(id: "u1", roles: [role], tenant: "t1", department: "engineering"), perm)
                    #expect(d0.reason == expected(role, perm, satisfied: false), "\(role) \(perm) without context: \(d0.reason)")
                    #expect(d0.allowed == (d0.reason == .granted))
                    // Satisfied: owner, same department, and the sales department.
                    let d1 = try svc.check(Principal(id: "u1", roles: [role], tenant: "t1", department: "sales"), perm,
                                           context: ResourceAttributes(ownerId: "u1", tenant: "t1", department: "sales"))
                    #expect(d1.reason == expected(role, perm, satisfied: true), "\(role) \(perm) with context: \(d1.reason)")
                }
            }
        }
    }
}

@Suite struct PermissionSemanticsTests {
    static let policy = #"""
    {"resources": ["docs", "reports", "system"], "actions": ["read", "write", "delete"],
     "scope_actions": {"modify": ["write", "delete"]},
     "roles": {
       "reader": {"allow": ["*:read"]},
       "writer": {"inherits": ["reader"], "allow": ["docs:write", {"permission": "docs:delete", "owner_only": true}]},
       "dept": {"allow": [{"permission": "reports:write", "department": "finance"},
                          {"permission": "reports:delete", "same_department": true}]},
       "ops": {"allow": [{"permission": "system:*", "cross_tenant": true}]},
       "banned": {"deny": ["docs:*"]},
       "boss": {"inherits": ["writer", "dept"], "allow": ["*:*"], "deny": ["system:delete"]}
     },
     "deny": [{"permission": "reports:delete", "roles": ["writer"]}]}
    """#

    @Test func wildcardsAndHierarchy() throws {
        let svc = try service(Self.policy)
        let reader = Principal(id: "a", roles: ["reader"])
        #expect(try svc.check(reader, "docs:read").allowed)
        #expect(try svc.check(reader, "system:read").allowed)
        #expect(try svc.check(reader, "docs:write").reason == .noGrant)
        let writer = Principal(id: "a", roles: ["writer"])
        #expect(try svc.check(writer, "reports:read").allowed)  // inherited
        let d = try svc.check(writer, "docs:write")
        #expect(d.allowed)
        #expect(try svc.ruleText(d) == "writer: allow docs:write")
        let boss = Principal(id: "b", roles: ["boss"])
        #expect(try svc.check(boss, "system:write").allowed)
        #expect(try svc.check(boss, "docs:delete").allowed)  // *:* without condition
    }

    @Test func denyOverridesEveryAllow() throws {
        let svc = try service(Self.policy)
        // A role's own deny, inherited by roles above it.
        let boss = try svc.check(Principal(id: "b", roles: ["boss"]), "system:delete")
        #expect(boss.reason == .deniedByRule)
        #expect(try svc.ruleText(boss) == "boss: deny system:delete")
        // A deny from another role of the same principal beats an allow.
        let mixed = try svc.check(Principal(id: "a", roles: ["writer", "banned"]), "docs:write")
        #expect(mixed.reason == .deniedByRule)
        let mixed2 = try svc.check(Principal(id: "a", roles: ["banned", "writer"]), "docs:read")
        #expect(mixed2.reason == .deniedByRule)
        #expect(try svc.check(Principal(id: "a", roles: ["banned", "writer"]), "reports:read").allowed)
        // A top-level deny for named roles, inherited by boss (which inherits writer).
        let top = try svc.check(Principal(id: "b", roles: ["boss"]), "reports:delete",
                                context: ResourceAttributes(department: "x"))
        #expect(top.reason == .deniedByRule)
        #expect(try svc.ruleText(top) == "deny reports:delete for writer")
    }

    @Test func conditions() throws {
        let svc = try service(Self.policy)
        let w = Principal(id: "alice", roles: ["writer"], department: "finance")
        #expect(try svc.check(w, "docs:delete").reason == .ownerOnly)
        #expect(try svc.check(w, "docs:delete", context: ResourceAttributes(ownerId: "bob")).reason == .ownerOnly)
        let ok = try svc.check(w, "docs:delete", context: ResourceAttributes(ownerId: "alice"))
        #expect(ok.allowed)
        #expect(try svc.ruleText(ok) == "writer: allow docs:delete if owner_only")
        // Owner-only never matches an empty principal id against an empty owner.
        #expect(try svc.check(Principal(roles: ["writer"]), "docs:delete", context: ResourceAttributes()).reason == .ownerOnly)
        let fin = Principal(id: "c", roles: ["dept"], department: "finance")
        let eng = Principal(id: "c", roles: ["dept"], department: "engineering")
        #expect(try svc.check(fin, "reports:write").allowed)
        #expect(try svc.check(eng, "reports:write").reason == .department)
        #expect(try svc.check(Principal(id: "c", roles: ["dept"]), "reports:write").reason == .department)
        #expect(try svc.check(eng, "reports:delete", context: ResourceAttributes(department: "engineering")).allowed)
        #expect(try svc.check(eng, "reports:delete", context: ResourceAttributes(department: "finance")).reason == .department)
        #expect(try svc.check(eng, "reports:delete").reason == .department)
    }

    @Test func tenantIsolation() throws {
        let svc = try service(Self.policy)
        let p = Principal(id: "a", roles: ["reader"], tenant: "acme")
        #expect(try svc.check(p, "docs:read", context: ResourceAttributes(tenant: "acme")).allowed)
        #expect(try svc.check(p, "docs:read", context: ResourceAttributes(tenant: "globex")).reason == .tenantMismatch)
        // No tenant on the resource: isolation does not apply.
        #expect(try svc.check(p, "docs:read", context: ResourceAttributes(ownerId: "x")).allowed)
        // A principal without a tenant never reaches a tenant's resource.
        #expect(try svc.check(Principal(id: "a", roles: ["reader"]), "docs:read", context: ResourceAttributes(tenant: "acme")).reason == .tenantMismatch)
        // cross_tenant grants waive it.
        #expect(try svc.check(Principal(id: "o", roles: ["ops"], tenant: "platform"), "system:write",
                              context: ResourceAttributes(tenant: "acme")).allowed)
        // tenant_isolation false turns it off for the whole policy.
        let off = try service(#"{"resources": ["d"], "actions": ["r"], "tenant_isolation": false, "roles": {"x": {"allow": ["d:r"]}}}"#)
        #expect(try off.check(Principal(id: "a", roles: ["x"], tenant: "t1"), "d:r", context: ResourceAttributes(tenant: "t2")).allowed)
    }

    @Test func scopes() throws {
        let svc = try service(Self.policy)
        let boss = { (scopes: [String]) in Principal(id: "b", roles: ["boss"], scopes: scopes) }
        #expect(try svc.check(boss(["docs:read"]), "docs:read").allowed)
        #expect(try svc.check(boss(["docs:read"]), "docs:write").reason == .scopeMissing)
        #expect(try svc.check(boss(["docs:*"]), "docs:write").allowed)
        #expect(try svc.check(boss(["*:write"]), "reports:write").allowed)
        #expect(try svc.check(boss(["read"]), "reports:read").allowed)  // bare = *:read
        #expect(try svc.check(boss(["docs:modify"]), "docs:delete").allowed)  // scope verb
        #expect(try svc.check(boss(["docs:modify"]), "docs:read").reason == .scopeMissing)
        #expect(try svc.check(boss(["openid", "profile"]), "docs:read").reason == .scopeMissing)
        #expect(try svc.check(boss([]), "docs:read").reason == .scopeMissing)  // scopes present but none
        // Scopes never add to roles: AND, not OR.
        #expect(try svc.check(Principal(id: "a", roles: ["reader"], scopes: ["docs:write"]), "docs:write").reason == .noGrant)
        // Comma-separated scopes work too.
        let p = Principal(id: "b", roles: ["boss"], scopes: ["docs:read,reports:read"])
        #expect(try svc.check(p, "reports:read").allowed)
    }

    @Test func unknownNamesAreDenialsOrIgnored() throws {
        let svc = try service(Self.policy)
        let p = Principal(id: "a", roles: ["ghost", "reader", "phantom"])
        #expect(try svc.check(p, "docs:read").allowed)
        #expect(try svc.check(p, "nope:read").reason == .unknownResource)
        #expect(try svc.check(p, "docs:fly").reason == .unknownAction)
        #expect(try svc.check(p, ":").reason == .unknownResource)
        #expect(try svc.check(Principal(id: "a", roles: []), "docs:read").reason == .noGrant)
        guard case .object(let stats) = svc.stats(), case .number(let n)? = stats["unknown_roles"] else {
            Issue.record("stats shape"); return
        }
        #expect(n.int64 == 2)
        expectError(.invalidArgument, "resource:action") { _ = try svc.check(p, "docsread") }
    }

    @Test func batchDecidesInOrderWithOnePolicy() throws {
        let svc = try service(Self.policy)
        let p = Principal(id: "a", roles: ["writer"])
        let ds = try svc.checkBatch(p, ["docs:read", "docs:write", "system:delete", "nope:read", "docs:delete"],
                                    context: ResourceAttributes(ownerId: "a"))
        #expect(ds.map(\.reason) == [.granted, .granted, .noGrant, .unknownResource, .granted])
        expectError(.invalidArgument) { _ = try svc.checkBatch(p, ["docs:read", "bad"]) }
    }
}

@Suite struct PermissionPolicyErrorTests {
    @Test func cyclesAreNamed() {
        expectError(.config, "role inheritance cycle: a -> b -> c -> a") {
            _ = try service(#"{"resources": ["d"], "actions": ["r"], "roles": {"a": {"inherits": ["b"]}, "b": {"inherits": ["c"]}, "c": {"inherits": ["a"]}}}"#)
        }
        expectError(.config, "cycle: s -> s") {
            _ = try service(#"{"resources": ["d"], "actions": ["r"], "roles": {"s": {"inherits": ["s"]}}}"#)
        }
        // A DAG (diamond) is fine.
        #expect(throws: Never.self) {
            _ = try service(#"{"resources": ["d"], "actions": ["r"], "roles": {"top": {"inherits": ["l", "r"]}, "l": {"inherits": ["base"]}, "r": {"inherits": ["base"]}, "base": {"allow": ["d:r"]}}}"#)
        }
    }

    @Test func invalidPoliciesNameTheField() {
        let cases: [(String, String)] = [
            (#"{"actions": ["r"], "roles": {"x": {}}}"#, "policy.resources is required"),
            (#"{"resources": ["d"], "actions": ["r"], "roles": {"x": {"allow": ["d:w"]}}}"#, "policy.roles.x.allow[0]: unknown action w"),
            (#"{"resources": ["d"], "actions": ["r"], "roles": {"x": {"allow": ["e:r"]}}}"#, "unknown resource e"),
            (#"{"resources": ["d"], "actions": ["r"], "roles": {"x": {"allow": ["dr"]}}}"#, "is not resource:action"),
            (#"{"resources": ["d"], "actions": ["r"], "roles": {"x": {"inherits": ["y"]}}}"#, "unknown role y"),
            (#"{"resources": ["d"], "actions": ["r"], "roles": {"x": {"alow": []}}}"#, "field permissions.policy.roles.x.alow"),
            (#"{"resources": ["d"], "actions": ["r"], "roles": {"x": {"allow": [{"permission": "d:r", "owner": true}]}}}"#, "field permissions.policy.roles.x.allow[0].owner"),
            (#"{"resources": ["d", "d"], "actions": ["r"], "roles": {"x": {}}}"#, "declared twice"),
            (#"{"resources": ["a b"], "actions": ["r"], "roles": {"x": {}}}"#, "contains a space"),
            (#"{"resources": ["d"], "actions": ["r"], "roles": {}}"#, "at least one role"),
            (#"{"resources": ["d"], "actions": ["r"], "roles": {"x": {}}, "deny": [{"permission": "d:r", "roles": ["q"]}]}"#, "unknown role q"),
        ]
        for (policy, fragment) in cases {
            expectError(.config, fragment) {
                _ = try Runtime.open(config: #"{"permissions": {"policy": \#(policy)}}"#)
            }
        }
        expectError(.config, "policy or permissions.policy_file is required") { _ = try Runtime.open(config: #"{"permissions": {}}"#) }
        expectError(.config, "No such file") { _ = try Runtime.open(config: #"{"permissions": {"policy_file": "/nonexistent/p.json"}}"#) }
    }

    @Test func tooLargeMatrixIsRefused() {
        let resources = (0..<5000).map { "\"r\($0)\"" }.joined(separator: ",")
        let actions = (0..<100).map { "\"a\($0)\"" }.joined(separator: ",")
        let roles = (0..<40).map { "\"x\($0)\": {}" }.joined(separator: ",")
        expectError(.config, "the limit is") {
            _ = try service(#"{"resources": [\#(resources)], "actions": [\#(actions)], "roles": {\#(roles)}}"#)
        }
    }
}

/// Records audit events.
private final class RecordingHook: AuditHook, @unchecked Sendable {
    private let lock = ConditionLock()
    private var _events: [AutomaticAuditEvent] = []
    var automaticEventsEnabled: Bool { true }
    func emitAutomatic(_ event: AutomaticAuditEvent) { lock.withLock { _events.append(event) } }
    var events: [AutomaticAuditEvent] { lock.withLock { _events } }
}

@Suite struct PermissionReloadTests {
    private func hooked(_ policy: String, hook: RecordingHook) throws -> PermissionService {
        let doc = try JSONReader.parse(#"{"policy": \#(policy)}"#)
        let ctx = CapabilityContext(config: ConfigContext(allowInlineSecrets: false), redis: nil, audit: hook)
        return try PermissionService.read(try ConfigObject(doc, path: "permissions"), context: ctx)
    }

    static let v1 = #"{"resources": ["d"], "actions": ["r", "w"], "roles": {"x": {"allow": ["d:r"]}}}"#
    static let v2 = #"{"resources": ["d"], "actions": ["r", "w"], "roles": {"x": {"allow": ["d:r", "d:w"]}}}"#

    @Test func auditEventsForDenialsReloadsAndShadow() throws {
        let hook = RecordingHook()
        let svc = try hooked(Self.v1, hook: hook)
        let p = Principal(id: "alice", roles: ["x"], tenant: "acme")
        #expect(try svc.check(p, "d:r").allowed)
        #expect(hook.events.isEmpty)  // allowed decisions are not audited
        #expect(try svc.check(p, "d:w").reason == .noGrant)
        let denied = hook.events.last
        #expect(denied?.type == "authorization")
        #expect(denied?.subtype == "permission_denied")
        #expect(denied?.reason == "no_grant")
        #expect(denied?.actor == "alice")
        #expect(denied?.resource == "d")
        #expect(denied?.action == "w")
        try svc.loadShadowPolicy(Self.v2)
        #expect(try svc.check(p, "d:w").allowed == false)  // the shadow changes nothing
        #expect(hook.events.contains { $0.subtype == "shadow_disagreement" && $0.resource == "d" })
        #expect(try svc.check(p, "d:r").allowed)
        guard case .object(let s) = svc.stats() else { Issue.record("stats"); return }
        #expect(s["shadow_decisions"]?.int64Value == 2)
        #expect(s["shadow_disagreements"]?.int64Value == 1)
        try svc.loadPolicy(Self.v2)
        #expect(hook.events.contains { $0.type == "key_management" && $0.subtype == "policy_reloaded" })
        #expect(try svc.check(p, "d:w").allowed)
        try svc.loadShadowPolicy(nil)
        guard case .object(let s2) = svc.stats() else { Issue.record("stats"); return }
        #expect(s2["shadow"] == .null)
        #expect(s2["reloads"]?.int64Value == 1)
    }

    @Test func aFailedReloadKeepsTheActivePolicyAndOldDecisionsLoseTheirRule() throws {
        let svc = try service(Self.v1)
        let p = Principal(id: "a", roles: ["x"])
        let d = try svc.check(p, "d:r")
        #expect(try svc.ruleText(d) == "x: allow d:r")
        expectError(.config, "unknown action z") { try svc.loadPolicy(#"{"resources": ["d"], "actions": ["r"], "roles": {"x": {"allow": ["d:z"]}}}"#) }
        #expect(try svc.ruleText(d) == "x: allow d:r")
        try svc.loadPolicy(Self.v2)
        expectError(.notFound, "another policy generation") { _ = try svc.ruleText(d) }
    }

    /// 8 threads decide while the policy flips between v1 and v2: every decision is exactly
    /// what v1 or v2 says (d:r always allowed; d:w either way), and a batch never mixes.
    @Test func atomicReloadUnderEightThreads() throws {
        let svc = try service(Self.v1)
        let p = Principal(id: "a", roles: ["x"])
        let failures = ConditionLock()
        nonisolated(unsafe) var bad = 0
        DispatchQueue.concurrentPerform(iterations: 9) { t in
            if t == 8 {
                for i in 0..<200 { try? svc.loadPolicy(i % 2 == 0 ? Self.v2 : Self.v1) }
                return
            }
            for _ in 0..<2000 {
                guard let ds = try? svc.checkBatch(p, ["d:w", "d:r", "d:w"]) else { failures.withLock { bad += 1 }; continue }
                let ok = ds[1].allowed && ds[0].allowed == ds[2].allowed && ds[0].generation == ds[2].generation
                    && (ds[0].reason == .granted || ds[0].reason == .noGrant)
                if !ok { failures.withLock { bad += 1 } }
                guard let single = try? svc.check(p, "d:r"), single.allowed else { failures.withLock { bad += 1 }; continue }
            }
        }
        #expect(bad == 0)
    }
}

@Suite struct PermissionScaleTests {
    /// 1,000 roles, 10,000 rules: compiles, decides exactly like the definition.
    @Test func thousandRolesTenThousandRules() throws {
        var rng = SplitMix(seed: 42)
        let R = 50, A = 5, N = 1000
        var roles: [String] = []
        var grants: [[(Int, Int)]] = []
        for i in 0..<N {
            var g: [(Int, Int)] = []
            for _ in 0..<10 { g.append((Int(rng.next() % UInt64(R)), Int(rng.next() % UInt64(A)))) }
            grants.append(g)
            let allow = g.map { "\"r\($0.0):a\($0.1)\"" }.joined(separator: ",")
            let inh = i > 0 && i % 3 == 0 ? #", "inherits": ["role\#(i - 1)"]"# : ""
            roles.append(#""role\#(i)": {"allow": [\#(allow)]\#(inh)}"#)
        }
        let policy = #"{"resources": [\#((0..<R).map { "\"r\($0)\"" }.joined(separator: ","))], "actions": [\#((0..<A).map { "\"a\($0)\"" }.joined(separator: ","))], "roles": {\#(roles.joined(separator: ","))}}"#
        let svc = try service(policy)
        func effective(_ i: Int) -> Set<Int> {
            var s = Set(grants[i].map { $0.0 * A + $0.1 })
            if i > 0 && i % 3 == 0 { s.formUnion(effective(i - 1)) }
            return s
        }
        for _ in 0..<3000 {
            let i = Int(rng.next() % UInt64(N)), r = Int(rng.next() % UInt64(R)), a = Int(rng.next() % UInt64(A))
            let d = try svc.check(Principal(id: "u", roles: ["role\(i)"]), "r\(r):a\(a)")
            #expect(d.allowed == effective(i).contains(r * A + a))
        }
    }
}

struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

@Suite struct PackedFormatTests {
    /// Random fields of every length around the 8-byte scanning steps split exactly.
    @Test func principalAndRequestSplitExactly() throws {
        var rng = SplitMix(seed: 7)
        func field() -> [UInt8] { (0..<Int(rng.next() % 20)).map { _ in UInt8(1 + rng.next() % 255) } }
        for _ in 0..<2000 {
            let n = 4 + Int(rng.next() % 2)
            let fields = (0..<n).map { _ in field() }
            var packed: [UInt8] = []
            for (i, f) in fields.enumerated() { if i > 0 { packed.append(0) }; packed += f }
            let p = try packed.withRawBytes { (raw) throws(BitsecError) in try PrincipalView.parse(raw) }
            let got = [p.id, p.roles, p.tenant, p.department] + (p.hasScopes ? [p.scopes] : [])
            #expect(got.map { Array($0.string.utf8) }.count == n)
            for (g, f) in zip(got, fields) { #expect(g.count == f.count) }
            #expect(p.hasScopes == (n == 5))
            // The same principal inside a packed request, with and without a context.
            let ctx = [field(), field(), field()]
            for withContext in [false, true] {
                var req = Array("docs:read".utf8) + [0] + packed
                if withContext { for c in ctx { req.append(0); req += c } }
                let q = try req.withRawBytes { (raw) throws(BitsecError) in try PackedRequest.parse(raw) }
                #expect(q.permission.count == 9)
                #expect(q.principal.department.count == fields[3].count)
                #expect(q.principal.hasScopes == (n == 5))
                #expect(q.context.owner.count == (withContext ? ctx[0].count : 0))
                #expect(q.context.department.count == (withContext ? ctx[2].count : 0))
            }
        }
    }

    @Test func wrongFieldCountsAreRefused() {
        for count in [1, 2, 3, 6, 7] {
            let packed = Array(Array(repeating: "x", count: count).joined(separator: "\0").utf8)
            expectError(.invalidArgument, "4 or 5") { _ = try packed.withRawBytes { (r) throws(BitsecError) in try PrincipalView.parse(r) } }
        }
        for count in [1, 2, 3, 4, 7, 10, 12] {
            let packed = Array(Array(repeating: "x", count: count).joined(separator: "\0").utf8)
            expectError(.invalidArgument) { _ = try packed.withRawBytes { (r) throws(BitsecError) in try PackedRequest.parse(r) } }
        }
        for count in [1, 2, 4] {
            let packed = Array(Array(repeating: "x", count: count).joined(separator: "\0").utf8)
            expectError(.invalidArgument, "3 NUL-separated") { _ = try packed.withRawBytes { (r) throws(BitsecError) in try ResourceContext.parse(r) } }
        }
    }
}

@Suite struct PermissionLimitTests {
    /// A deep inheritance chain compiles (each role holds its ancestors) and decides right.
    @Test func longInheritanceChain() throws {
        let n = 2000
        let roles = (0..<n).map { i in i == 0 ? #""r0": {"allow": ["d:a"]}"# : #""r\#(i)": {"inherits": ["r\#(i - 1)"]}"# }
        let svc = try service(#"{"resources": ["d"], "actions": ["a", "b"], "roles": {\#(roles.joined(separator: ","))}}"#)
        #expect(try svc.check(Principal(id: "u", roles: ["r\(n - 1)"]), "d:a").allowed)
        #expect(try svc.check(Principal(id: "u", roles: ["r\(n - 1)"]), "d:b").reason == .noGrant)
    }
}

@Suite struct PermissionLookupPathTests {
    /// Above 65,536 resource:action pairs the permission is looked up in two parts: same answers.
    @Test func splitLookupForLargeNameSpaces() throws {
        let resources = (0..<300).map { "\"r\($0)\"" }.joined(separator: ",")
        let actions = (0..<250).map { "\"a\($0)\"" }.joined(separator: ",")
        let svc = try service(#"{"resources": [\#(resources)], "actions": [\#(actions)], "roles": {"x": {"allow": ["r7:*", "*:a3", {"permission": "r9:a9", "owner_only": true}], "deny": ["r7:a3"]}}}"#)
        let p = Principal(id: "u", roles: ["x"])
        #expect(try svc.check(p, "r7:a100").allowed)
        #expect(try svc.check(p, "r299:a3").allowed)
        #expect(try svc.check(p, "r7:a3").reason == .deniedByRule)
        #expect(try svc.check(p, "r8:a4").reason == .noGrant)
        #expect(try svc.check(p, "r9:a9").reason == .ownerOnly)
        #expect(try svc.check(p, "r300:a1").reason == .unknownResource)
        #expect(try svc.check(p, "r1:a250").reason == .unknownAction)
        #expect(try svc.checkBatch(p, ["r7:a1", "r1:a1"]).map(\.reason) == [.granted, .noGrant])
        expectError(.invalidArgument) { _ = try svc.check(p, "r1") }
    }
}
