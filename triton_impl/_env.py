"""What the environment says about running Triton, readable without importing triton (the front
door asks before it knows whether triton is installed)."""

from __future__ import annotations

import os


def interpreting() -> bool:
    """True when Triton kernels run in the CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"
