"""``python -m bitsec``: the ``bitsec`` command line (bitsec.cli)."""
from __future__ import annotations

import sys

from .cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
