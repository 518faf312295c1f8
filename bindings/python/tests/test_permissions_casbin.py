"""Differential test: bitsec and casbin (the incumbent, pinned in requirements-dev.txt)
agree on every request over randomly generated RBAC policies (seeded, reproducible):
role grants, role inheritance (a DAG), users with several roles, deny rules, and requests
naming unknown roles, resources and actions."""
from __future__ import annotations

import random

import casbin
import pytest

import bitsec
from bitsec import Principal

MODEL = """
[request_definition]
r = sub, obj, act

[policy_definition]
p = sub, obj, act, eft

[role_definition]
g = _, _

[policy_effect]
e = some(where (p.eft == allow)) && !some(where (p.eft == deny))

[matchers]
m = g(r.sub, p.sub) && r.obj == p.obj && r.act == p.act
"""


def generate(rng: random.Random) -> dict:
    resources = [f"res{i}" for i in range(rng.randint(1, 12))]
    actions = [f"act{i}" for i in range(rng.randint(1, 6))]
    nroles = rng.randint(1, 25)
    roles = [f"role{i}" for i in range(nroles)]
    # Levels keep the inheritance depth under casbin's default max hierarchy level (10).
    level = {r: rng.randint(0, 5) for r in roles}
    policy: dict = {"resources": resources, "actions": actions, "roles": {}}
    for r in roles:
        spec: dict = {}
        parents = [q for q in roles if level[q] > level[r] and rng.random() < 0.15]
        if parents:
            spec["inherits"] = parents
        allow = sorted({f"{rng.choice(resources)}:{rng.choice(actions)}" for _ in range(rng.randint(0, 8))})
        if allow:
            spec["allow"] = allow
        if rng.random() < 0.3:
            spec["deny"] = sorted({f"{rng.choice(resources)}:{rng.choice(actions)}" for _ in range(rng.randint(1, 2))})
        policy["roles"][r] = spec
    return policy


def casbin_enforcer(policy: dict, fast: bool = False) -> casbin.Enforcer:
    model = casbin.model.Model()
    model.load_model_from_text(MODEL)
    e = casbin.Enforcer(model)
    e.enable_log(False) if hasattr(e, "enable_log") else None
    for role, spec in policy["roles"].items():
        for perm in spec.get("allow", []):
            r, a = perm.split(":")
            e.add_policy(role, r, a, "allow")
        for perm in spec.get("deny", []):
            r, a = perm.split(":")
            e.add_policy(role, r, a, "deny")
        for parent in spec.get("inherits", []):
            e.add_grouping_policy(role, parent)  # role inherits parent's permissions
    return e


@pytest.mark.parametrize("seed", range(30))
def test_bitsec_agrees_with_casbin(seed: int) -> None:
    rng = random.Random(seed)
    policy = generate(rng)
    e = casbin_enforcer(policy)
    roles = list(policy["roles"])
    resources = policy["resources"] + ["ghost_resource"]
    actions = policy["actions"] + ["ghost_action"]
    with bitsec.Runtime({"permissions": {"policy": policy}}) as rt:
        disagreements = []
        for i in range(200):
            user = f"user{i}"
            mine = rng.sample(roles, k=min(len(roles), rng.randint(0, 3)))
            if rng.random() < 0.1:
                mine.append("ghost_role")
            for r in mine:
                e.add_grouping_policy(user, r)
            res, act = rng.choice(resources), rng.choice(actions)
            expected = e.enforce(user, res, act)
            d = rt.check_permission(Principal(user, mine), res, act)
            if d.allowed != expected:
                disagreements.append((mine, res, act, expected, d))
            # The batch form agrees with the single form.
            if i % 25 == 0:
                every = [f"{r}:{a}" for r in resources for a in actions]
                batch = rt.check_permissions(Principal(user, mine), every)
                for perm, bd in zip(every, batch):
                    r, a = perm.split(":")
                    if bd.allowed != e.enforce(user, r, a):
                        disagreements.append((mine, r, a, not bd.allowed, bd))
        assert disagreements == [], f"seed {seed}: {disagreements[:5]}"
