#!/usr/bin/env python3
"""Permissions from Python: bitsec.check_permission vs casbin Enforcer and FastEnforcer,
same ADR-007 policy (examples/policies/adr007.json), same requests, one run.
Prints a markdown table (us per decision, and casbin time / bitsec time)."""
from __future__ import annotations

import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import casbin

import bitsec
from bitsec import Principal, _native

ROOT = Path(__file__).resolve().parents[1]
POLICY = json.loads((ROOT / "examples" / "policies" / "adr007.json").read_text())
MODEL = """
[request_definition]
r = sub, obj, act

[policy_definition]
p = sub, obj, act

[role_definition]
g = _, _

[policy_effect]
e = some(where (p.eft == allow))

[matchers]
m = g(r.sub, p.sub) && r.obj == p.obj && r.act == p.act
"""


def casbin_lines() -> list[tuple[str, str, str]]:
    out = []
    for role, spec in POLICY["roles"].items():
        for perm in spec.get("allow", []):
            r, a = perm.split(":")
            rs = POLICY["resources"] if r == "*" else [r]
            acts = POLICY["actions"] if a == "*" else [a]
            out += [(role, x, y) for x in rs for y in acts]
    return out


def timed(fn, n: int) -> float:
    """us per call of this thread's CPU time: the machine is shared, and wall time under
    load measures the scheduler as much as the code (ctypes calls stay on this thread)."""
    t0 = time.thread_time()
    fn(n)
    return (time.thread_time() - t0) / n * 1e6


def main() -> None:
    rng = random.Random(7)
    roles = list(POLICY["roles"])
    users = [(f"user{i}", rng.choice(roles)) for i in range(200)]
    requests = [(rng.choice(users), rng.choice(POLICY["resources"]), rng.choice(POLICY["actions"])) for _ in range(1000)]

    model_path = Path(tempfile.mkdtemp()) / "model.conf"
    model_path.write_text(MODEL)
    enforcers = {}
    for name, cls, kw in (("casbin Enforcer", casbin.Enforcer, {}),
                          ("casbin FastEnforcer", casbin.FastEnforcer, {"cache_key_order": [1, 2]})):
        e = cls(str(model_path), **kw)
        for line in casbin_lines():
            e.add_policy(*line)
        for u, r in users:
            e.add_grouping_policy(u, r)
        enforcers[name] = e

    rt = bitsec.Runtime({"permissions": {"policy": POLICY}})
    principals = {u: Principal(u, [r], tenant="acme") for u, r in users}
    claims = {u: {"sub": u, "role": r, "tenant_id": "acme"} for u, r in users}
    reqs_b = [(principals[u], f"{res}:{act}") for (u, _), res, act in requests]
    reqs_c = [(claims[u], res, act) for (u, _), res, act in requests]
    reqs_e = [(u, res, act) for (u, _), res, act in requests]

    # Same answers everywhere.
    for (p, perm), (u, res, act) in zip(reqs_b, reqs_e):
        b = rt.check_permission(p, perm).allowed
        for name, e in enforcers.items():
            assert e.enforce(u, res, act) == b, (name, u, res, act)

    check = rt.check_permission

    def run_bitsec(n: int) -> None:
        k = len(reqs_b)
        for i in range(n):
            p, perm = reqs_b[i % k]
            check(p, perm)

    def run_bitsec_claims(n: int) -> None:
        k = len(reqs_c)
        for i in range(n):
            c, res, act = reqs_c[i % k]
            check(c, res, act)

    menu = [f"{r}:{a}" for r in POLICY["resources"] for a in POLICY["actions"]]

    def run_batch(n: int) -> None:
        k = len(reqs_b)
        for i in range(n // len(menu)):
            rt.check_permissions(reqs_b[i % k][0], menu)

    abi = _native.abi_version
    from bitsec import permissions as P
    import ctypes
    raw_fn = P._check_packed_fast
    raw_h = ctypes.c_void_p(rt.handle)
    raw_out = ctypes.c_uint64(0)
    raw_ref = ctypes.byref(raw_out)
    raw_reqs = [perm.encode() + p._tail for p, perm in reqs_b]

    def run_raw(n: int) -> None:
        k = len(raw_reqs)
        for i in range(n):
            q = raw_reqs[i % k]
            raw_fn(raw_h, q, len(q), raw_ref)

    def run_floor(n: int) -> None:
        for _ in range(n):
            abi()

    def run_casbin(e):
        def go(n: int) -> None:
            k = len(reqs_e)
            for i in range(n):
                u, res, act = reqs_e[i % k]
                e.enforce(u, res, act)
        return go

    quick = os.environ.get("BENCH_QUICK")
    nb = 20_000 if quick else 200_000
    nc = 300 if quick else 3_000
    for fn in (run_bitsec, run_bitsec_claims):  # warm up
        fn(2000)
    rows = []
    best = lambda fn, n: min(timed(fn, n) for _ in range(3))
    b = best(run_bitsec, nb)
    rows.append(("bitsec check_permission (Principal)", b))
    rows.append(("bitsec check_permission (claims dict)", best(run_bitsec_claims, nb)))
    rows.append((f"bitsec check_permissions (batch of {len(menu)}), per decision", best(run_batch, nb)))
    for name, e in enforcers.items():
        rows.append((name + ".enforce", best(run_casbin(e), nc)))
    floor = best(run_floor, nb)
    raw = best(run_raw, nb)

    print("## permissions: Python, us per decision (ADR-007 policy, 4 roles, 200 users, 1,000 requests)\n")
    print("us of thread CPU time per decision, best of 3 runs; all implementations agree on every request.\n")
    print(f"casbin {casbin.__version__ if hasattr(casbin, '__version__') else '1.43.0'}; Python {sys.version.split()[0]}; "
          f"a bare ctypes call without arguments (bitsec_abi_version) costs {floor:.2f} us here; the "
          f"C call alone, with its request pre-built (bitsec_check_permission_packed), {raw:.2f} us.\n")
    print("| implementation | us/decision | casbin Enforcer / this | casbin FastEnforcer / this |")
    print("|---|---:|---:|---:|")
    cas, fast = rows[3][1], rows[4][1]
    ratio = lambda x: f"{x:.0f}x" if x >= 10 else f"{x:.2f}x"
    for name, us in rows:
        print(f"| {name} | {us:.2f} | {ratio(cas / us)} | {ratio(fast / us)} |")


if __name__ == "__main__":
    main()
