"""flashduo in a few lines: attention, backends, GQA, a packed qkv projection, gradients.

From the repository root (or drop `PYTHONPATH=.` after `pip install -e .`):

    PYTHONPATH=. python examples/quickstart.py                     # GPU: the triton backend
    PYTHONPATH=. python examples/quickstart.py                     # CPU: the reference backend
    TRITON_INTERPRET=1 PYTHONPATH=. python examples/quickstart.py  # CPU: triton, interpreted
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

    backend = flashduo.registry.resolve_backend(None)  # FLASHDUO_BACKEND, else triton on a GPU
    out = flashduo.attention(q, k, v, causal=True)  # no backend= given: the default
    out.float().square().mean().backward()  # the backend's own backward
    with flashduo.use_backend("torch"):  # PyTorch SDPA, for comparison
        ref = flashduo.attention(q, k, v, causal=True)
    print(f"default backend {backend}: max |{backend} - sdpa| = {(out - ref).abs().max().item():.2e}")

    # A ViT-style fused projection (B, N, 3, H, D): views, no copies.
    qkv = torch.randn(b, n, 3, 6, d, device=device, dtype=dtype)
    qv, kv, vv = (t.transpose(1, 2) for t in qkv.unbind(2))
    out, lse = flashduo.attention_with_lse(qv, kv, vv)
    print("packed qkv ->", tuple(out.shape), "lse", tuple(lse.shape), lse.dtype)


if __name__ == "__main__":
    main()
