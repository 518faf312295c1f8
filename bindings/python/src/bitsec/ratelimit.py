"""The ratelimit capability's methods of ``bitsec.Runtime``: rate_limit_take and brute-force blocking (issue 5)."""
from __future__ import annotations


class RateLimitMixin:
    """Mixed into ``bitsec.Runtime``; uses its ``handle``."""

    handle: int
