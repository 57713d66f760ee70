"""2D axial rotary position embedding (RoPE) for ViTs: the one definition of its semantics.

Tokens are ``num_prefix_tokens`` unrotated tokens (CLS, registers) followed by an H_img x W_img
patch grid flattened row-major, so patch p sits at column x = p % W_img and row y = p // W_img.
Channels rotate in interleaved pairs (2i, 2i + 1) by an angle theta_i:

    out[2i]     = x[2i] cos(theta_i) - x[2i + 1] sin(theta_i)
    out[2i + 1] = x[2i + 1] cos(theta_i) + x[2i] sin(theta_i)

With D / 4 frequency bands band_j = base^(-j / (D / 4)), pair i < D / 4 turns by x * band_i and
pair D / 4 + j by y * band_j (the 'xy' layout of RoPE-ViT and timm's ``vit_*_patch16_rope_*``).
"""

from __future__ import annotations

import torch

# What the kernels of a fused-RoPE backend take: (cos, sin, num_prefix_tokens), the tables float32
# contiguous (N_pos, D / 2) like ``CosSinTable.COSP`` / ``SINP``.
RopeTables = tuple[torch.Tensor, torch.Tensor, int]


class CosSinTable:
    """Per-pair cos / sin of the rotation angles of every grid position.

    ``CosSinTable(base=100.0, H_img=14, D=64, device=None, W_img=None)`` builds the table of an
    H_img x W_img grid (W_img defaults to H_img). Attributes: ``COSP`` and ``SINP`` float32
    (H_img * W_img, D / 2), pair i of position p at [p, i]; ``H_img``, ``W_img``, ``D``, ``base``.
    """

    def __init__(
        self,
        base: float = 100.0,
        H_img: int = 14,  # noqa: N803  (the grid's conventional name)
        D: int = 64,  # noqa: N803
        device: torch.device | str | None = None,
        W_img: int | None = None,  # noqa: N803
    ) -> None:
        W_img = H_img if W_img is None else W_img  # noqa: N806
        for name, val in (("H_img", H_img), ("W_img", W_img), ("D", D)):
            if not isinstance(val, int) or isinstance(val, bool) or val < 1:
                raise ValueError(f"{name} must be a positive int, got {val!r}")
        if D % 4:
            raise ValueError(f"2D RoPE needs a head dim divisible by 4 (x and y pairs), got D={D}")
        if not base > 0:
            raise ValueError(f"base must be positive, got {base!r}")
        angles = _grid_angles(H_img, W_img, D, base)
        self._set(angles.cos(), angles.sin(), H_img, W_img, D, float(base), device)

    def _set(self, cosp, sinp, h_img, w_img, d, base, device, grids=None, prefix=None) -> None:
        self.COSP = cosp.to(device=device, dtype=torch.float32).contiguous()
        self.SINP = sinp.to(device=device, dtype=torch.float32).contiguous()
        self.H_img, self.W_img, self.D, self.base = h_img, w_img, d, base
        # for_grids tables: the (H_img, W_img) of each packed sequence and its prefix length
        self.grids, self.num_prefix_tokens = grids, prefix

    @classmethod
    def for_grids(cls, grids: list[tuple[int, int]], base: float = 100.0, D: int = 64,  # noqa: N803
                  num_prefix_tokens: int = 1,
                  device: torch.device | str | None = None) -> CosSinTable:
        """The table of packed sequences of different grid sizes (NaViT-style native resolution):
        sequence i is ``num_prefix_tokens`` unrotated tokens then an h_i x w_i grid, and the
        sequences follow each other as in ``attention_varlen``'s packed layout.

        ``COSP`` / ``SINP`` are (total tokens, D / 2): each sequence's grid rows as in
        ``CosSinTable(base, h_i, D, W_img=w_i)``, prefix rows the identity (cos 1, sin 0), so the
        whole packed tensor turns in one pass with no prefix (``rotate_packed``). ``grids`` and
        ``num_prefix_tokens`` are recorded; ``H_img`` / ``W_img`` are None.
        """
        if not grids:
            raise ValueError("grids must list at least one (H_img, W_img)")
        if not isinstance(D, int) or isinstance(D, bool) or D < 4 or D % 4:
            raise ValueError(f"2D RoPE needs a head dim divisible by 4 (x and y pairs), got D={D}")
        if not base > 0:
            raise ValueError(f"base must be positive, got {base!r}")
        if not isinstance(num_prefix_tokens, int) or isinstance(num_prefix_tokens, bool) or (
                num_prefix_tokens < 0):
            raise ValueError(f"num_prefix_tokens must be an int >= 0, got {num_prefix_tokens!r}")
        prefix = torch.zeros(num_prefix_tokens, D // 4 * 2, dtype=torch.float64)
        parts = []
        for i, grid in enumerate(grids):
            h, w = grid
            for name, val in ((f"grids[{i}] H_img", h), (f"grids[{i}] W_img", w)):
                if not isinstance(val, int) or isinstance(val, bool) or val < 1:
                    raise ValueError(f"{name} must be a positive int, got {val!r}")
            parts += [prefix, _grid_angles(h, w, D, base)]
        angles = torch.cat(parts)
        table = cls.__new__(cls)
        table._set(angles.cos(), angles.sin(), None, None, D, float(base), device,
                   tuple((int(h), int(w)) for h, w in grids), num_prefix_tokens)
        return table

    @property
    def seq_lens(self) -> list[int]:
        """Tokens of each packed sequence of a ``for_grids`` table (prefix + h * w)."""
        if self.grids is None:
            raise ValueError("seq_lens belongs to CosSinTable.for_grids tables")
        return [self.num_prefix_tokens + h * w for h, w in self.grids]

    @classmethod
    def from_embed(cls, emb: torch.Tensor, H_img: int | None = None,  # noqa: N803
                   W_img: int | None = None) -> CosSinTable:  # noqa: N803
        """The table of a timm-style embedding: cat(sin, cos) of shape (N_pos, 2 D), each pair's
        value repeated over its two channels (what timm's rope modules return from get_embed()).

        H_img x W_img is only recorded; it defaults to an N_pos x 1 grid.
        """
        if emb.dim() != 2 or emb.shape[1] % 8:
            raise ValueError(f"expected a (N_pos, 2 D) rope embedding, got {tuple(emb.shape)}")
        sin, cos = emb.detach().chunk(2, dim=-1)
        n_pos = emb.shape[0]
        h_img = n_pos if H_img is None else H_img
        w_img = n_pos // h_img if W_img is None else W_img
        table = cls.__new__(cls)
        table._set(cos[:, ::2], sin[:, ::2], h_img, w_img, sin.shape[1], float("nan"), emb.device)
        return table

    @classmethod
    def from_timm(cls, rope: torch.nn.Module, device: torch.device | str | None = None):
        """The table of a timm rotary module (``RotaryEmbeddingCat`` of the rope ViTs / EVA),
        read from its own embedding, so any position scaling it applies is kept."""
        h_img, w_img = (int(s) for s in rope.feat_shape)
        table = cls.from_embed(rope.get_embed().double(), h_img, w_img)
        table.base = float(getattr(rope, "temperature", float("nan")))
        return table.to(device) if device is not None else table

    @property
    def n_pos(self) -> int:
        """Number of rotated tokens, H_img * W_img."""
        return self.COSP.shape[0]

    @property
    def device(self) -> torch.device:
        return self.COSP.device

    def to(self, device: torch.device | str) -> CosSinTable:
        """A copy of the table on ``device``."""
        table = CosSinTable.__new__(CosSinTable)
        table._set(self.COSP, self.SINP, self.H_img, self.W_img, self.D, self.base, device,
                   self.grids, self.num_prefix_tokens)
        return table

    def __repr__(self) -> str:
        if self.grids is not None:
            return (f"CosSinTable.for_grids({list(self.grids)}, D={self.D}, base={self.base}, "
                    f"num_prefix_tokens={self.num_prefix_tokens}, device={self.device})")
        return (f"CosSinTable(H_img={self.H_img}, W_img={self.W_img}, D={self.D}, "
                f"base={self.base}, device={self.device})")


def _grid_angles(h_img: int, w_img: int, d: int, base: float) -> torch.Tensor:
    """float64 (h_img * w_img, D / 2) rotation angles of a row-major grid (module docstring)."""
    quarter = d // 4
    bands = base ** (-torch.arange(quarter, dtype=torch.float64) / quarter)
    rows, cols = torch.meshgrid(
        torch.arange(h_img, dtype=torch.float64), torch.arange(w_img, dtype=torch.float64),
        indexing="ij",
    )
    return torch.cat([cols.reshape(-1, 1) * bands, rows.reshape(-1, 1) * bands], dim=1)


def check_rope(x: torch.Tensor, table: CosSinTable, num_prefix_tokens: int, name: str) -> None:
    """Raise ValueError / TypeError naming ``name`` when the table cannot rotate x (B, H, N, D)."""
    if not isinstance(table, CosSinTable):
        raise TypeError(f"rope must be a CosSinTable, got {type(table).__name__}")
    if table.grids is not None:
        raise ValueError(f"rope is a CosSinTable.for_grids table of packed sequences, which does "
                         f"not rotate a (B, H, N, D) {name}")
    if not isinstance(num_prefix_tokens, int) or isinstance(num_prefix_tokens, bool) or (
        num_prefix_tokens < 0
    ):
        raise ValueError(f"num_prefix_tokens must be an int >= 0, got {num_prefix_tokens!r}")
    d, n = x.shape[-1], x.shape[-2]
    if d % 4:
        raise ValueError(f"2D RoPE needs a head dim divisible by 4, got {name} D={d}")
    if d != table.D:
        raise ValueError(f"rope table is for D={table.D}, {name} has D={d}")
    if n - num_prefix_tokens != table.n_pos:
        raise ValueError(
            f"{name} has N={n} tokens = {num_prefix_tokens} prefix + {n - num_prefix_tokens}, "
            f"but the rope table covers a {table.H_img}x{table.W_img} grid = {table.n_pos} tokens"
        )
    if table.device != x.device:
        raise ValueError(f"rope table is on {table.device}, {name} on {x.device}: "
                         f"move it with table.to({str(x.device)!r})")


def apply_rope(x: torch.Tensor, table: CosSinTable, num_prefix_tokens: int = 1) -> torch.Tensor:
    """Rotate x (B, H, N, D) by the table, the first ``num_prefix_tokens`` tokens untouched.

    Computes in float32 (float64 for float64 input) and returns x's dtype; differentiable.
    """
    check_rope(x, table, num_prefix_tokens, "x")
    return rotate_pairs(x, table.COSP, table.SINP, num_prefix_tokens)


def check_packed_rope(x: torch.Tensor, table: CosSinTable, seq_lens: list[int],
                      name: str) -> None:
    """Raise ValueError / TypeError naming ``name`` when the table cannot rotate packed tokens x
    (total, H, D) whose sequences have ``seq_lens`` tokens: it must be a ``for_grids`` table of
    the same sequence lengths, head dim and device."""
    if not isinstance(table, CosSinTable):
        raise TypeError(f"rope must be a CosSinTable, got {type(table).__name__}")
    if table.grids is None:
        raise ValueError("rope for packed sequences must be a CosSinTable.for_grids table (one "
                         "grid per sequence)")
    if x.shape[-1] != table.D:
        raise ValueError(f"rope table is for D={table.D}, {name} has D={x.shape[-1]}")
    if list(seq_lens) != table.seq_lens:
        raise ValueError(f"rope table's sequences have {table.seq_lens} tokens "
                         f"({table.num_prefix_tokens} prefix + each grid), {name}'s have "
                         f"{list(seq_lens)}")
    if table.device != x.device:
        raise ValueError(f"rope table is on {table.device}, {name} on {x.device}: "
                         f"move it with table.to({str(x.device)!r})")


def rotate_packed(x: torch.Tensor, table: CosSinTable, inverse: bool = False) -> torch.Tensor:
    """Rotate packed tokens x (total, H, D) by a ``for_grids`` table (one row per token, prefix
    rows the identity); shapes must match (no other checks)."""
    return rotate_pairs(x.transpose(0, 1), table.COSP, table.SINP, 0, inverse).transpose(0, 1)


def rotate_pairs(
    x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, num_prefix_tokens: int,
    inverse: bool = False,
) -> torch.Tensor:
    """The rotation itself: x (..., N, D) by per-pair tables cos, sin (N - prefix, D / 2).

    ``inverse`` turns by the opposite angles (the transpose), which maps a gradient taken against
    the rotated tensor back to the unrotated one. No argument checks (see ``check_rope``).
    """
    work = torch.float64 if x.dtype == torch.float64 else torch.float32
    head, grid = x[..., :num_prefix_tokens, :], x[..., num_prefix_tokens:, :].to(work)
    pairs = grid.unflatten(-1, (-1, 2))
    even, odd = pairs[..., 0], pairs[..., 1]
    cos, sin = cos.to(work), sin.to(work)
    if inverse:
        sin = -sin
    rotated = torch.stack([even * cos - odd * sin, odd * cos + even * sin], dim=-1).flatten(-2)
    return torch.cat([head, rotated.to(x.dtype)], dim=-2)
