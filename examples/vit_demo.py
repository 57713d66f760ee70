"""A minimal ViT block with 2D RoPE attention through flashduo, trained for a few steps.

    PYTHONPATH=. python examples/vit_demo.py                      # CPU: the reference backend
    PYTHONPATH=. python examples/vit_demo.py --backend triton     # GPU: any registered backend

The block is pre-norm attention + MLP on (B, 1 + H_img * W_img, C) tokens (a CLS token, then the
patch grid row-major); q and k are rotated by the table inside ``flashduo.attention``.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

import flashduo


class RopeViTBlock(nn.Module):
    """x (B, N, C) -> (B, N, C), N = num_prefix_tokens + table.n_pos, C = heads * head_dim."""

    def __init__(self, dim: int, heads: int, table: flashduo.CosSinTable, backend: str | None):
        super().__init__()
        self.heads, self.table, self.backend = heads, table, backend
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(self.norm1(x)).reshape(b, n, 3, self.heads, c // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # (B, heads, N, head_dim) strided views
        attn = flashduo.attention(q, k, v, backend=self.backend, rope=self.table,
                                  num_prefix_tokens=1)
        x = x + self.proj(attn.transpose(1, 2).reshape(b, n, c))
        return x + self.mlp(self.norm2(x))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default=None, help="flashduo backend (default: automatic)")
    parser.add_argument("--grid", type=int, default=14, help="patch grid side (default 14)")
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    device, dtype = ("cuda", torch.bfloat16) if cuda else ("cpu", torch.float32)
    backend = args.backend or ("triton" if cuda else "reference")
    heads, head_dim = 6, 64
    table = flashduo.CosSinTable(base=100.0, H_img=args.grid, D=head_dim, device=device)
    block = RopeViTBlock(heads * head_dim, heads, table, backend).to(device, dtype)
    opt = torch.optim.AdamW(block.parameters(), lr=1e-3)
    x = torch.randn(8, 1 + args.grid**2, heads * head_dim, device=device, dtype=dtype)
    target = torch.randn_like(x)
    print(f"backend={backend} device={device} dtype={dtype} tokens={x.shape[1]} {table}")
    for step in range(args.steps):
        loss = (block(x) - target).float().square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        print(f"step {step}: loss {loss.item():.4f}")


if __name__ == "__main__":
    main()
