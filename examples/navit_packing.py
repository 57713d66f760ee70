"""Images of different sizes in one attention call (NaViT-style native resolution): each image is a
CLS token plus its own h x w patch grid, the images are packed one after another, and
``flashduo.attention_varlen`` attends within each image with that image's own 2D RoPE grid
(``CosSinTable.for_grids``).

    PYTHONPATH=. python examples/navit_packing.py                     # CPU: the reference backend
    PYTHONPATH=. python examples/navit_packing.py --backend triton    # a backend with packed calls

It checks the packed call against attending image by image (float64 reference, each image rotated
by its own ``CosSinTable``), then, on a GPU, times it against what one does without packed
sequences: pad every image to the largest, rotate, and call SDPA with a key-padding mask.
"""

from __future__ import annotations

import argparse
import random

import torch
import torch.nn.functional as F

import flashduo
import reference

PREFIX = 1  # the CLS token of each image, left unrotated


def packed_images(grids: list[tuple[int, int]], heads: int, head_dim: int, device: str,
                  dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    """Random q, k, v (total, heads, head_dim) of the packed images and their int32 cu_seqlens."""
    lens = [PREFIX + h * w for h, w in grids]
    total = sum(lens)
    q, k, v = (torch.randn(total, heads, head_dim, device=device, dtype=dtype) for _ in range(3))
    cu = torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist(), dtype=torch.int32,
                      device=device)
    return q, k, v, cu


def image_by_image(q, k, v, cu, grids, head_dim: int) -> torch.Tensor:
    """float64 truth: each image alone, rotated by its own table, through the reference."""
    bounds = cu.tolist()
    outs = []
    for i, (h, w) in enumerate(grids):
        a, b = bounds[i], bounds[i + 1]
        table = flashduo.CosSinTable(100.0, h, head_dim, device=q.device, W_img=w)
        qi, ki, vi = (x[a:b].transpose(0, 1)[None].double() for x in (q, k, v))
        qi, ki = (reference.apply_rope(x, table, PREFIX) for x in (qi, ki))
        outs.append(reference.attention_ref(qi, ki, vi)[0][0].transpose(0, 1))
    return torch.cat(outs)


def padded_sdpa(q, k, v, cu, grids, head_dim: int):
    """What one does without packed calls: the images padded to the largest, rotated, and a
    key-padding mask; returns a function that runs the SDPA call on them."""
    bounds, n_max = cu.tolist(), max(PREFIX + h * w for h, w in grids)
    shape = (len(grids), q.shape[1], n_max, head_dim)
    qp, kp, vp = (torch.zeros(shape, device=q.device, dtype=q.dtype) for _ in range(3))
    keep = torch.zeros(len(grids), 1, 1, n_max, dtype=torch.bool, device=q.device)
    for i, (h, w) in enumerate(grids):
        a, b = bounds[i], bounds[i + 1]
        table = flashduo.CosSinTable(100.0, h, head_dim, device=q.device, W_img=w)
        qp[i, :, : b - a] = reference.apply_rope(q[a:b].transpose(0, 1)[None], table, PREFIX)[0]
        kp[i, :, : b - a] = reference.apply_rope(k[a:b].transpose(0, 1)[None], table, PREFIX)[0]
        vp[i, :, : b - a] = v[a:b].transpose(0, 1)
        keep[i, ..., : b - a] = True
    return lambda: F.scaled_dot_product_attention(qp, kp, vp, attn_mask=keep)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default=None, help="flashduo backend (default: reference on "
                        "the CPU, else the first one that takes packed sequences)")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--max-grid", type=int, default=16, help="largest grid side in patches")
    parser.add_argument("--heads", type=int, default=6)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    device = "cuda" if torch.cuda.is_available() else "cpu"
    backend = args.backend or ("reference" if device == "cpu" else next(
        b for b in flashduo.registered_backends()
        if flashduo.get_backend(b).fwd_varlen and not flashduo.get_backend(b).unavailable()))
    dtype = torch.float32 if backend == "reference" or device == "cpu" else torch.bfloat16
    rng = random.Random(args.seed)
    grids = [(rng.randint(2, args.max_grid), rng.randint(2, args.max_grid))
             for _ in range(args.images)]
    torch.manual_seed(args.seed)
    q, k, v, cu = packed_images(grids, args.heads, args.head_dim, device, dtype)
    table = flashduo.CosSinTable.for_grids(grids, D=args.head_dim, num_prefix_tokens=PREFIX,
                                           device=device)
    n_max = max(PREFIX + h * w for h, w in grids)

    def packed() -> torch.Tensor:
        return flashduo.attention_varlen(q, k, v, cu, cu, n_max, n_max, backend=backend,
                                         rope=table)

    out = packed()
    truth = image_by_image(q, k, v, cu, grids, args.head_dim)
    print(f"{len(grids)} images, grids {grids}, {q.shape[0]} tokens, backend {backend}, "
          f"{str(dtype).removeprefix('torch.')}")
    print(f"check against image by image (float64): max abs diff "
          f"{(out.double() - truth).abs().max().item():.2e}")
    if device == "cuda" and backend != "reference":
        from triton.testing import do_bench

        sdpa = padded_sdpa(q, k, v, cu, grids, args.head_dim)
        t_packed, t_padded = do_bench(packed), do_bench(sdpa)
        print(f"packed attention_varlen (rotation included)  {t_packed * 1e3:8.1f} us")
        print(f"padded SDPA + key-padding mask (pre-rotated)  {t_padded * 1e3:8.1f} us   "
              f"{len(grids) * n_max} padded tokens")


if __name__ == "__main__":
    main()
