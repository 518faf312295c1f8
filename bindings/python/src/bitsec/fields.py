"""The fields capability's methods of ``bitsec.Runtime``: encrypt_field, decrypt_field, rewrap_field, Fernet (issue 7)."""
from __future__ import annotations


class FieldsMixin:
    """Mixed into ``bitsec.Runtime``; uses its ``handle``."""

    handle: int
