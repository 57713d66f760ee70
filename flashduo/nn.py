"""Modules on top of ``flashduo.attention``.

``MultiheadAttention`` keeps ``torch.nn.MultiheadAttention``'s parameters under the same names and
shapes, so a ``state_dict`` moves between the two in either direction; attention itself runs on a
flashduo backend and never materializes the attention weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from flashduo.api import attention


class MultiheadAttention(nn.Module):
    """Multi-head attention with ``torch.nn.MultiheadAttention``'s parameters and call signature.

    Parameters (as in torch): ``in_proj_weight`` (3E, E) stacking the q, k, v projections,
    ``in_proj_bias`` (3E) (None without bias), ``out_proj`` a ``Linear(E, E)``.

    Supported: self- and cross-attention (key/value length S may differ from the query length L),
    ``is_causal`` (top-left aligned), ``batch_first`` either way, unbatched inputs, and torch's
    ``key_padding_mask`` and ``attn_mask`` (bool: True leaves the key out, the opposite of SDPA's
    convention; float: added to the scores), handed to ``flashduo.attention`` as one ``attn_mask``
    on the backends that take it (``Backend.masks``). As in torch, ``attn_mask`` passed with
    ``is_causal=True`` is taken to be the causal mask and not read. Unlike torch, a query that
    the masks leave no key gets 0, not NaN. Not supported (``ValueError``): ``need_weights=True``.
    There is no dropout.

    Args:
        embed_dim: E, split into ``num_heads`` heads of E / num_heads channels.
        num_heads: H; must divide E.
        bias: add biases to the input and output projections.
        batch_first: inputs and output are (B, L, E) when True, (L, B, E) when False.
        backend: flashduo backend name for the attention; None follows ``flashduo.use_backend``,
            ``FLASHDUO_BACKEND``, then the default.
        device, dtype: of the parameters.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        bias: bool = True,
        batch_first: bool = True,
        backend: str | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if embed_dim <= 0 or num_heads <= 0:
            raise ValueError(f"embed_dim and num_heads must be positive, got {embed_dim}, {num_heads}")
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim={embed_dim} must be divisible by num_heads={num_heads}")
        factory = {"device": device, "dtype": dtype}
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.batch_first = batch_first
        self.backend = backend
        self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim, **factory))
        if bias:
            self.in_proj_bias = nn.Parameter(torch.empty(3 * embed_dim, **factory))
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **factory)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """torch's initialization: Xavier-uniform input projection, zero biases."""
        nn.init.xavier_uniform_(self.in_proj_weight)
        if self.in_proj_bias is not None:
            nn.init.zeros_(self.in_proj_bias)
            nn.init.zeros_(self.out_proj.bias)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = False,
        attn_mask: torch.Tensor | None = None,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, None]:
        """Attend from ``query`` to ``key``/``value``.

        Args:
            query: (B, L, E) with ``batch_first``, else (L, B, E); or unbatched (L, E).
            key, value: (B, S, E) / (S, B, E) / (S, E), laid out like ``query``.
            key_padding_mask: (B, S), or (S,) unbatched: bool (True: that key is padding) or
                float (added to its scores).
            attn_mask: (L, S) or (B * H, L, S), or (H, L, S) unbatched: bool (True: the query may
                not attend to that key) or float (added); ignored with ``is_causal=True``.
            need_weights: only False (the weights are never materialized).
            is_causal: query i attends to keys j <= i.

        Returns:
            (out, None): out shaped like ``query``; None stands for the attention weights.
        """
        self._check_arguments(query, key, value, key_padding_mask, need_weights, attn_mask, is_causal)
        packed = query is key and key is value
        unbatched = query.dim() == 2
        if unbatched:
            query, key, value = query[None], key[None], value[None]
        elif not self.batch_first:
            query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
        q, k, v = self._project(query, key, value, packed)
        mask = self._sdpa_mask(key_padding_mask, None if is_causal else attn_mask, q.shape[0],
                               q.shape[2], k.shape[2])
        out = attention(q, k, v, causal=is_causal, backend=self.backend, attn_mask=mask)
        out = self.out_proj(out.transpose(1, 2).flatten(2))  # (B, L, E)
        if unbatched:
            out = out[0]
        elif not self.batch_first:
            out = out.transpose(0, 1)
        return out, None

    def _project(self, query, key, value, packed: bool):
        """(B, L, E) query, (B, S, E) key and value -> q (B, H, L, D), k and v (B, H, S, D), views
        of the projections with last-dim stride 1; ``packed``: one projection of the shared input."""
        if packed:
            qkv = F.linear(query, self.in_proj_weight, self.in_proj_bias)
            qkv = qkv.unflatten(-1, (3, self.num_heads, self.head_dim))
            return tuple(t.transpose(1, 2) for t in qkv.unbind(2))
        weights = self.in_proj_weight.chunk(3)
        biases = self.in_proj_bias.chunk(3) if self.in_proj_bias is not None else (None,) * 3
        return tuple(
            F.linear(x, w, b).unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)
            for x, w, b in zip((query, key, value), weights, biases)
        )

    def _sdpa_mask(self, key_padding_mask: torch.Tensor | None, attn_mask: torch.Tensor | None,
                   b: int, nq: int, nk: int) -> torch.Tensor | None:
        """torch's two masks as one SDPA-style mask broadcastable to (B, H, L, S): bool True
        where the key takes part when both are bool, else float (bool ones as -inf / 0)."""
        parts = []
        if key_padding_mask is not None:
            parts.append(key_padding_mask.reshape(b, 1, 1, nk))
        if attn_mask is not None:
            shape = (1, 1, nq, nk) if attn_mask.dim() == 2 else (b, self.num_heads, nq, nk)
            parts.append(attn_mask.reshape(shape))
        if not parts:
            return None
        if all(p.dtype == torch.bool for p in parts):
            keep = ~parts[0]
            for p in parts[1:]:
                keep = keep & ~p
            return keep
        total = None
        for p in parts:
            if p.dtype == torch.bool:
                p = torch.zeros(p.shape, device=p.device).masked_fill(p, float("-inf"))
            total = p if total is None else total + p
        return total

    def _check_masks(self, key_padding_mask, attn_mask, query, key, is_causal) -> None:
        unbatched = query.dim() == 2
        seq = 0 if unbatched or not self.batch_first else 1
        nq, nk = query.shape[seq], key.shape[seq]
        b = 1 if unbatched else query.shape[1 - seq]
        wants = {"key_padding_mask": [(nk,)] if unbatched else [(b, nk)],
                 "attn_mask": [(nq, nk), (self.num_heads, nq, nk)] if unbatched
                 else [(nq, nk), (b * self.num_heads, nq, nk)]}
        for name, mask in (("key_padding_mask", key_padding_mask), ("attn_mask", attn_mask)):
            if mask is None or (name == "attn_mask" and is_causal):
                continue
            if not isinstance(mask, torch.Tensor):
                raise TypeError(f"{name} must be a torch.Tensor or None, got {type(mask).__name__}")
            if mask.dtype != torch.bool and not mask.is_floating_point():
                raise TypeError(f"{name} must be bool or floating, got dtype {mask.dtype}")
            if tuple(mask.shape) not in wants[name]:
                raise ValueError(f"{name} must have shape {' or '.join(map(str, wants[name]))}, "
                                 f"got {tuple(mask.shape)}")

    def _check_arguments(self, query, key, value, key_padding_mask, need_weights, attn_mask,
                         is_causal) -> None:
        if not isinstance(is_causal, bool):
            raise TypeError(f"is_causal must be a bool, got {type(is_causal).__name__}")
        if need_weights:
            raise ValueError("need_weights=True is not supported: flashduo never materializes the "
                             "attention weights (pass need_weights=False)")
        names = ("query", "key", "value")
        for name, x in zip(names, (query, key, value)):
            if not isinstance(x, torch.Tensor):
                raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
            if x.dim() != query.dim() or x.dim() not in (2, 3):
                raise ValueError(f"query, key, value must all be 3-D (batched) or 2-D (unbatched), "
                                 f"got {tuple(query.shape)}, {tuple(key.shape)}, {tuple(value.shape)}")
            if x.shape[-1] != self.embed_dim:
                raise ValueError(f"{name} has {x.shape[-1]} features, expected embed_dim={self.embed_dim}")
        if key.shape != value.shape:
            raise ValueError(f"key and value must have the same shape, got {tuple(key.shape)}, "
                             f"{tuple(value.shape)}")
        batch_dim = 0 if self.batch_first else 1
        if query.dim() == 3 and query.shape[batch_dim] != key.shape[batch_dim]:
            raise ValueError(f"query and key must have the same batch size, got {tuple(query.shape)} "
                             f"and {tuple(key.shape)} (batch_first={self.batch_first})")
        self._check_masks(key_padding_mask, attn_mask, query, key, is_causal)

    def extra_repr(self) -> str:
        return (f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, "
                f"bias={self.in_proj_bias is not None}, batch_first={self.batch_first}, "
                f"backend={self.backend!r}")
