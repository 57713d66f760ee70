"""PyTorch reference math: the one definition of flashduo's semantics.

Everything here materializes the full (Nq, Nk) score matrix, so it is meant for checking and
teaching, not for speed. Layout follows ``torch.nn.functional.scaled_dot_product_attention``:
q is (B, Hq, Nq, D), k and v are (B, Hkv, Nk, D) with Hq % Hkv == 0.
"""

from reference.attention import attention_bwd_ref, attention_naive, attention_ref, causal_mask
from reference.rope import CosSinTable, RopeTables, apply_rope, check_rope, rotate_pairs

__all__ = ["attention_ref", "attention_bwd_ref", "attention_naive", "causal_mask", "CosSinTable",
           "RopeTables", "apply_rope", "check_rope", "rotate_pairs"]
