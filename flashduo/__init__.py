"""flashduo: FlashAttention forward and backward in Triton and CUDA C++ behind one API.

>>> out = flashduo.attention(q, k, v, causal=True)              # q (B, Hq, Nq, D), k/v (B, Hkv, Nk, D)
>>> out, lse = flashduo.attention_with_lse(q, k, v, backend="triton")
>>> with flashduo.use_backend("torch"):
...     out = flashduo.attention(q, k, v)
"""

from flashduo import backends as _backends  # noqa: F401  (registers the built-in backends)
from flashduo.api import attention, attention_with_lse
from flashduo.registry import (
    Backend,
    available_backends,
    get_backend,
    register_backend,
    registered_backends,
    use_backend,
)

__all__ = [
    "attention",
    "attention_with_lse",
    "use_backend",
    "available_backends",
    "registered_backends",
    "get_backend",
    "register_backend",
    "Backend",
]
__version__ = "0.1.0"
