"""Route the attention of timm's rope ViTs (``vit_*_patch16_rope_*``, EVA-style ``AttentionRope``
and ``EvaAttention``) through ``flashduo.attention`` with the 2D RoPE passed as a table.

>>> model = timm.create_model("vit_small_patch16_rope_224")
>>> flashduo.integrations.timm.patch(model, backend="triton")

Each patched module keeps its weights, norms and projections; only q·kᵀ → softmax → ·v (and the
rotation of q and k) change hands. Calls flashduo cannot serve as-is fall back to the module's
own forward: an attention mask where the backend does not take one (``Backend.masks``; timm's
masks have SDPA's meaning, as flashduo's ``attn_mask`` does), attention dropout while training,
per-head ('mixed') rope embeddings, rotate-half rope, or separate q/k/v projections.
"""

from __future__ import annotations

import types

import torch

import flashduo
from flashduo import registry
from flashduo._memo import PerTensor
from reference.rope import CosSinTable

PATCHED_CLASSES = ("AttentionRope", "EvaAttention")


_TABLES = PerTensor(limit=1)  # one embedding in use at a time: the newest only


def _table(emb: torch.Tensor) -> CosSinTable:
    """The ``CosSinTable`` of a timm rope embedding (N_pos, 2 D). timm hands every block the same
    cached embedding tensor, so eager calls build its table once and reuse it while the tensor
    lives unchanged (same object, same version); traced calls build it in the graph."""
    if torch.compiler.is_compiling():
        return CosSinTable.from_embed(emb)
    return _TABLES.get(emb, CosSinTable.from_embed)


def _takes_attn_mask(backend: str | None) -> bool:
    """Whether the backend the patched call would use runs ``attn_mask`` (``Backend.masks``)."""
    return "attn_mask" in flashduo.get_backend(registry.resolve_backend(backend)).masks


def _identity(module: torch.nn.Module, name: str) -> bool:
    """Whether the module's ``name`` layer is absent or does nothing (timm's default)."""
    layer = getattr(module, name, None)
    return layer is None or isinstance(layer, torch.nn.Identity)


def _flash_forward(self, x: torch.Tensor, rope: torch.Tensor | None = None,
                   attn_mask: torch.Tensor | None = None, is_causal: bool = False,
                   **kwargs) -> torch.Tensor:
    """x (B, N, C) -> (B, N, C), like the timm module's forward."""
    attn_drop = getattr(self, "attn_drop", None)
    dropping = self.training and attn_drop is not None and attn_drop.p > 0
    if ((attn_mask is not None and not _takes_attn_mask(self._flashduo_backend)) or dropping
            or kwargs or rope is None or rope.dim() != 2
            or getattr(self, "rotate_half", False) or getattr(self, "qkv", None) is None):
        return self._flashduo_original_forward(x, rope=rope, attn_mask=attn_mask,
                                               is_causal=is_causal, **kwargs)
    b, n, _ = x.shape
    gate = self.gate(x).sigmoid() if getattr(self, "gate", None) is not None else None
    qkv = self.qkv(x)
    if getattr(self, "q_bias", None) is not None:  # EvaAttention keeps its qkv bias apart
        qkv = qkv + torch.cat((self.q_bias, self.k_bias, self.v_bias))
    qkv = qkv.reshape(b, n, 3, self.num_heads, -1)
    options = dict(causal=is_causal, scale=self.scale, backend=self._flashduo_backend,
                   rope=_table(rope), num_prefix_tokens=self.num_prefix_tokens,
                   attn_mask=attn_mask)
    if _identity(self, "q_norm") and _identity(self, "k_norm"):
        out = flashduo.attention_qkvpacked(qkv, **options)  # one packed gradient, no stack
    else:
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        q = self.q_norm(q) if getattr(self, "q_norm", None) is not None else q
        k = self.k_norm(k) if getattr(self, "k_norm", None) is not None else k
        out = flashduo.attention(q, k, v, **options).transpose(1, 2)
    out = out.reshape(b, n, -1)
    for name in ("norm", "proj", "proj_drop"):
        layer = getattr(self, name, None)
        if layer is not None:
            out = layer(out) if name != "proj" or gate is None else layer(out * gate)
    return out


def patch(model: torch.nn.Module, backend: str | None = None) -> torch.nn.Module:
    """Patch every ``AttentionRope`` / ``EvaAttention`` of ``model`` in place and return it.

    ``backend`` is a flashduo backend name (None: the usual selection). Raises ValueError when
    the model has no such module.
    """
    if backend is not None:
        flashduo.get_backend(backend)  # ValueError naming the registered backends
    count = 0
    for module in model.modules():
        if type(module).__name__ not in PATCHED_CLASSES:
            continue
        if not hasattr(module, "_flashduo_original_forward"):
            module._flashduo_original_forward = module.forward
        module._flashduo_backend = backend
        module.forward = types.MethodType(_flash_forward, module)
        count += 1
    if count == 0:
        raise ValueError(f"no {' / '.join(PATCHED_CLASSES)} module in {type(model).__name__}: "
                         "flashduo.integrations.timm.patch is for timm's rope ViTs")
    return model
