"""The totp capability's methods of ``bitsec.Runtime``: totp_verify, backup codes (issue 6)."""
from __future__ import annotations


class TOTPMixin:
    """Mixed into ``bitsec.Runtime``; uses its ``handle``."""

    handle: int
