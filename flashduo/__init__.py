"""flashduo: FlashAttention forward and backward in Triton and CUDA C++ behind one API.

>>> out = flashduo.attention(q, k, v, causal=True)              # q (B, Hq, Nq, D), k/v (B, Hkv, Nk, D)
>>> out, lse = flashduo.attention_with_lse(q, k, v, backend="triton")
>>> out = flashduo.attention_qkvpacked(qkv)                     # qkv (B, N, 3, H, D) -> (B, N, H, D)
>>> out = flashduo.attention_varlen(q, k, v, cu_q, cu_k, max_q, max_k, backend="reference")
>>> with flashduo.use_backend("torch"):
...     out = flashduo.attention(q, k, v)
>>> table = flashduo.CosSinTable(base=100.0, H_img=14, D=64, device="cuda")  # 2D RoPE of ViTs
>>> out = flashduo.attention(q, k, v, rope=table, num_prefix_tokens=1)       # N = 1 + 14 * 14
>>> mha = flashduo.nn.MultiheadAttention(384, 6, backend="triton")  # torch.nn.MultiheadAttention's
>>> out, _ = mha(x, x, x, is_causal=True)                          # parameters; x (B, N, 384)
"""

from flashduo import backends as _backends  # noqa: F401  (registers the built-in backends)
from flashduo import nn
from flashduo.api import attention, attention_qkvpacked, attention_varlen, attention_with_lse
from flashduo.compat import flash_attention, sdpa_triton_fa, sdpa_triton_fa_rope
from flashduo.registry import (
    Backend,
    available_backends,
    get_backend,
    register_backend,
    registered_backends,
    use_backend,
)
from reference.rope import CosSinTable, apply_rope

__all__ = [
    "attention",
    "attention_with_lse",
    "attention_qkvpacked",
    "attention_varlen",
    "use_backend",
    "available_backends",
    "registered_backends",
    "get_backend",
    "register_backend",
    "Backend",
    "CosSinTable",
    "apply_rope",
    "nn",
    "sdpa_triton_fa",
    "sdpa_triton_fa_rope",
    "flash_attention",
]
__version__ = "0.1.0"
