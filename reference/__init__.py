"""PyTorch reference math: the one definition of flashduo's semantics.

Everything here materializes the full (Nq, Nk) score matrix, so it is meant for checking and
teaching, not for speed. Layout follows ``torch.nn.functional.scaled_dot_product_attention``:
q is (B, Hq, Nq, D), k and v are (B, Hkv, Nk, D) with Hq % Hkv == 0.
"""

from reference.attention import (
    Window,
    attention_bwd_ref,
    attention_naive,
    attention_ref,
    causal_mask,
    key_visibility,
)
from reference.rope import (
    CosSinTable,
    RopeTables,
    apply_rope,
    check_packed_rope,
    check_rope,
    rotate_packed,
    rotate_pairs,
)
from reference.varlen import attention_varlen_bwd_ref, attention_varlen_ref

__all__ = ["attention_ref", "attention_bwd_ref", "attention_naive", "causal_mask",
           "key_visibility", "Window", "attention_varlen_ref", "attention_varlen_bwd_ref",
           "CosSinTable", "RopeTables", "apply_rope", "check_rope", "check_packed_rope", "rotate_packed",
           "rotate_pairs"]
