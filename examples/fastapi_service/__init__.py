"""The bitsec reference service (issue 9): the ERP equipment API secured by bitsec."""
from .app import create_app, create_user, hash_password, verify_password

__all__ = ["create_app", "create_user", "hash_password", "verify_password"]
