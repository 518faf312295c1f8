"""The audit capability's methods of ``bitsec.Runtime``: audit_emit, audit_flush, metrics_text (issue 8)."""
from __future__ import annotations


class AuditMixin:
    """Mixed into ``bitsec.Runtime``; uses its ``handle``."""

    handle: int
