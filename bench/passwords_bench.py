"""Passwords from Python: Runtime.password_hash / password_verify / the dummy verification at
the default parameters (scrypt N = 2^17, r = 8, p = 1) vs hashlib.scrypt with the same
parameters (OpenSSL underneath too), and the policy check.  Run: BENCH=passwords make bench"""
from __future__ import annotations

import hashlib
import os
import resource
import time

import bitsec

N = int(os.environ.get("BENCH_N", "5"))
PW = "correct horse battery staple"


def mean_ms(fn, n: int = N) -> float:
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) * 1000 / n


def main() -> None:
    with bitsec.Runtime({"passwords": {}}) as rt:
        stored = rt.password_hash(PW)
        salt = os.urandom(16)
        rows = [
            ("Runtime.password_hash", mean_ms(lambda: rt.password_hash(PW))),
            ("Runtime.password_verify (wrong password)", mean_ms(lambda: rt.password_verify("a wrong guess", stored))),
            ("Runtime.password_dummy_verify", mean_ms(lambda: rt.password_dummy_verify("a wrong guess"))),
            ("hashlib.scrypt, same parameters", mean_ms(lambda: hashlib.scrypt(PW.encode(), salt=salt, n=1 << 17, r=8, p=1,
                                                                              dklen=32, maxmem=256 << 20))),
        ]
        check_us = mean_ms(lambda: rt.password_check(PW), 20000) * 1000
    print(f"## passwords (Python): scrypt N=2^17, r=8, p=1; mean of {N}\n")
    print("| operation | time |\n|---|---|")
    for name, ms in rows:
        print(f"| {name} | {ms:.1f} ms |")
    print(f"| Runtime.password_check (NFKC + native check) | {check_us:.2f} us |")
    print(f"\npeak resident memory of the process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024} MiB")


if __name__ == "__main__":
    main()
