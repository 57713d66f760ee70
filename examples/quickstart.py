"""flashduo in a few lines: attention, backends, GQA, a packed qkv projection, gradients.

After `pip install -e .` (or with PYTHONPATH set to the repository root):

Run on a GPU:            python examples/quickstart.py
Run on a CPU (slowly):   TRITON_INTERPRET=1 python examples/quickstart.py
"""

from __future__ import annotations

import torch

import flashduo


def main() -> None:
    on_gpu = torch.cuda.is_available()
    device = "cuda" if on_gpu else "cpu"
    dtype = torch.bfloat16 if on_gpu else torch.float32
    print("backends:", flashduo.available_backends())

    # GQA: 8 query heads share 2 key/value heads. q (B, Hq, N, D), k/v (B, Hkv, N, D).
    b, n, d = 2, 197, 64
    q = torch.randn(b, 8, n, d, device=device, dtype=dtype, requires_grad=True)
    k = torch.randn(b, 2, n, d, device=device, dtype=dtype, requires_grad=True)
    v = torch.randn(b, 2, n, d, device=device, dtype=dtype, requires_grad=True)

    out = flashduo.attention(q, k, v, causal=True)  # default backend: triton
    out.float().square().mean().backward()  # runs the Triton backward kernels
    with flashduo.use_backend("torch"):  # PyTorch SDPA, for comparison
        ref = flashduo.attention(q, k, v, causal=True)
    print("max |triton - sdpa|:", (out - ref).abs().max().item())

    # A ViT-style fused projection (B, N, 3, H, D): views, no copies.
    qkv = torch.randn(b, n, 3, 6, d, device=device, dtype=dtype)
    qv, kv, vv = (t.transpose(1, 2) for t in qkv.unbind(2))
    out, lse = flashduo.attention_with_lse(qv, kv, vv)
    print("packed qkv ->", tuple(out.shape), "lse", tuple(lse.shape), lse.dtype)


if __name__ == "__main__":
    main()
