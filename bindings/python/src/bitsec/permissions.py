"""The permissions capability's methods of ``bitsec.Runtime``: check_permission and its batch form, load_policy (issue 4)."""
from __future__ import annotations


class PermissionsMixin:
    """Mixed into ``bitsec.Runtime``; uses its ``handle``."""

    handle: int
