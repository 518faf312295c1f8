"""The bitsec reference service: the ERP equipment API and ADR-007's inspections API
secured by bitsec, with the ERP guide's GDPR endpoints."""
from .app import check_password, create_app, create_user, hash_password

__all__ = ["create_app", "create_user", "hash_password", "check_password"]
