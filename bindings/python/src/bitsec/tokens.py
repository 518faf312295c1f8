"""The tokens capability's methods of ``bitsec.Runtime``: verify_token, sign_token, revoke_token, the pair/refresh helpers (issue 3)."""
from __future__ import annotations


class TokensMixin:
    """Mixed into ``bitsec.Runtime``; uses its ``handle``."""

    handle: int
