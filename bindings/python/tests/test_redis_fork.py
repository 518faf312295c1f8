"""A runtime used over Redis before fork(): the child forgets the parent's connections (a TLS
one is only closed there: freeing its SSL object takes locks of the shared SSL_CTX another
parent thread may hold at the fork) and opens its own; the parent's stay usable."""
from __future__ import annotations

import os
import signal
import uuid

import pytest

import bitsec
from redis_modes import REDIS_MODES, redis_section


@pytest.mark.parametrize("mode", REDIS_MODES)
def test_a_forked_child_opens_its_own_connections(mode: str, request: pytest.FixtureRequest) -> None:
    cfg = {"redis": redis_section(request, mode),
           "rate_limits": {"categories": {"default": {"capacity": 100, "period_seconds": 60}}}}
    key = "fork-" + uuid.uuid4().hex
    with bitsec.Runtime(cfg) as rt:
        assert rt.redis_ping() >= 0
        assert rt.rate_limit_take(key, "default").remaining == 99  # an idle connection is pooled now
        pid = os.fork()
        if pid == 0:  # the child: its own connection, the same shared state
            exit_status = 1
            try:
                signal.alarm(20)  # a hang fails the test instead of holding it
                d = rt.rate_limit_take(key, "default")
                exit_status = 0 if d and d.remaining == 98 and rt.redis_ping() >= 0 else 2
            finally:
                os._exit(exit_status)
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
        # the parent's pooled connection is still its own and still works
        assert rt.rate_limit_take(key, "default").remaining == 97
        assert rt.redis_ping() >= 0
