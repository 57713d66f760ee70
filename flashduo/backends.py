"""The built-in backends: ``triton``, ``triton-unfused``, ``cuda``, ``torch`` (SDPA itself) and
``reference``.

Each is registered with its capabilities; kernels are imported on first use so that importing
flashduo stays cheap and works where Triton is absent.
"""

from __future__ import annotations

import functools
import importlib.util
import os

import torch
import torch.nn.functional as F

import reference
from flashduo.registry import MASKS, Backend, register_backend, triton_interpreting

_HALF = frozenset({torch.float16, torch.bfloat16})
_FLOATS = _HALF | {torch.float32}


@functools.cache
def _triton_installed() -> bool:
    return importlib.util.find_spec("triton") is not None


def _triton_unavailable() -> str | None:
    if not _triton_installed():
        return "triton is not installed"
    if not (torch.cuda.is_available() or triton_interpreting()):
        return "no CUDA GPU visible (set TRITON_INTERPRET=1 to run the kernels on the CPU)"
    return None


def _triton_devices() -> frozenset[str]:
    return frozenset({"cuda", "cpu"}) if triton_interpreting() else frozenset({"cuda"})


INTERPRETER_BF16 = ("dtype=bfloat16 under the Triton interpreter (TRITON_INTERPRET=1), whose bfloat16 "
                    "dots give wrong results (use float16 or float32 on the CPU)")


def _interpreter_limits(q) -> list[str]:
    return [INTERPRETER_BF16] if q.dtype == torch.bfloat16 and triton_interpreting() else []


def _triton_limits(q, k, v, causal) -> list[str]:
    reasons = _interpreter_limits(q)
    if q.dtype == torch.float32 and q.shape[-1] > 128:
        reasons.append(f"head_dim={q.shape[-1]} in float32 needs more shared memory than one SM "
                       "has (use float16/bfloat16, or head_dim <= 128)")
    return reasons


def _triton_fwd(q, k, v, causal, scale, window=None, softcap=None, attn_mask=None):
    from triton_impl.fwd import attention_fwd

    return attention_fwd(q, k, v, causal, scale, window=window, softcap=softcap,
                         attn_mask=attn_mask)


def _triton_fwd_varlen(q, k, v, cu_q, cu_k, max_q, max_k, causal, scale, window=None,
                       softcap=None):
    from triton_impl.fwd import attention_fwd_varlen

    return attention_fwd_varlen(q, k, v, cu_q, cu_k, max_q, max_k, causal, scale,
                                window=window, softcap=softcap)


def _triton_bwd_varlen(dout, q, k, v, out, lse, cu_q, cu_k, max_q, max_k, causal, scale,
                       window=None, softcap=None, rope=None):
    from triton_impl.bwd import attention_bwd_varlen

    return attention_bwd_varlen(dout, q, k, v, out, lse, cu_q, cu_k, max_q, max_k, causal,
                                scale, window=window, softcap=softcap, rope=rope)


def _triton_rotate(q, k, rope):
    from triton_impl.rope import rotate_qk

    return rotate_qk(q, k, rope)


def _triton_bwd(dout, q, k, v, out, lse, causal, scale, rope=None, packed=None, window=None,
                softcap=None, attn_mask=None):
    from triton_impl.bwd import attention_bwd

    return attention_bwd(dout, q, k, v, out, lse, causal, scale, rope=rope, packed=packed,
                         window=window, softcap=softcap, attn_mask=attn_mask)


def _unfused_fwd(q, k, v, causal, scale):
    from triton_impl.unfused import unfused_fwd

    return unfused_fwd(q, k, v, causal, scale)


def _unfused_bwd(dout, q, k, v, out, lse, causal, scale):
    from triton_impl.unfused import unfused_bwd

    return unfused_bwd(dout, q, k, v, out, lse, causal, scale)


UNFUSED_BUFFERS = 2  # float32 (B, Hq, Nq, Nk) buffers the unfused backward holds: P and dS
UNFUSED_CPU_LIMIT = 2 << 30  # bytes of score buffers allowed off the GPU (Triton interpreter)


def unfused_limit_bytes(device: torch.device) -> int:
    """Bytes the unfused backend may spend on score buffers: 80% of the memory free on a CUDA
    device (counting blocks PyTorch's allocator holds unused), a fixed 2 GiB elsewhere."""
    if device.type != "cuda":
        return UNFUSED_CPU_LIMIT
    free, _ = torch.cuda.mem_get_info(device)
    cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return int(0.8 * (free + cached))


def _unfused_limits(q, k, v, causal) -> list[str]:
    reasons = _interpreter_limits(q)
    b, h, nq = q.shape[:3]
    nk = k.shape[2]
    need = UNFUSED_BUFFERS * 4 * b * h * nq * nk
    if need == 0:
        return reasons
    limit = unfused_limit_bytes(q.device)
    if need <= limit:
        return reasons
    return reasons + [f"materializing the scores takes {UNFUSED_BUFFERS} float32 (B, Hq, Nq, Nk) = "
            f"({b}, {h}, {nq}, {nk}) buffers, {need / 2**30:.2f} GiB > the {limit / 2**30:.2f} GiB "
            f"allowed on {q.device.type} (use a fused backend)"]


def _cuda_unavailable() -> str | None:
    return cuda_toolchain_missing() or (None if torch.cuda.is_available() else "no CUDA GPU visible")


@functools.cache
def cuda_toolchain_missing() -> str | None:
    """Why the CUDA extension cannot be built here (no CUDA build of torch, no toolkit); None if
    it can."""
    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU-only build"
    from bindings import loader

    try:
        loader.cuda_home()
    except RuntimeError as exc:
        return str(exc)
    return None


HOPPER_ONLY_HEAD_DIMS = frozenset({96, 256})


def _cuda_limits(q, k, v, causal) -> list[str]:
    d = int(q.shape[-1])
    if d not in HOPPER_ONLY_HEAD_DIMS or q.device.type != "cuda":
        return []
    if torch.cuda.get_device_capability(q.device) != (9, 0):
        return [f"head_dim={d} needs the Hopper kernels (an sm_90 GPU); elsewhere cuda takes "
                "64 or 128"]
    if os.environ.get("FLASHDUO_CUDA_ARCH") == "sm80":
        return [f"head_dim={d} needs the Hopper kernels, which FLASHDUO_CUDA_ARCH=sm80 turns off"]
    return []


def _cuda_fwd(q, k, v, causal, scale, rope=None):
    from bindings import flash

    return flash.fwd(q, k, v, causal, scale, rope=rope)


def _cuda_bwd(dout, q, k, v, out, lse, causal, scale, rope=None, deterministic=True):
    from bindings import flash

    return flash.bwd(dout, q, k, v, out, lse, causal, scale, rope=rope,
                     deterministic=deterministic)


def _torch_fwd(q, k, v, causal, scale):
    out = F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale, enable_gqa=True)
    return out, _lse_chunked(q, k, causal, scale)


def _lse_chunked(q, k, causal, scale, rows: int = 1024):
    """Row log-sum-exp of the masked scores in float32, 1024 query rows at a time."""
    kf = k.float().repeat_interleave(q.shape[1] // k.shape[1], dim=1).transpose(-2, -1)
    parts = []
    for start in range(0, q.shape[2], rows):
        s = torch.matmul(q[:, :, start : start + rows].float(), kf) * scale
        if causal:
            keep = reference.causal_mask(q.shape[2], k.shape[2], q.device)[start : start + rows]
            s = s.masked_fill(~keep, float("-inf"))
        parts.append(torch.logsumexp(s, dim=-1))
    return torch.cat(parts, dim=-1)


def _torch_bwd(dout, q, k, v, out, lse, causal, scale):
    # torch.func.vjp works inside a custom op, where tensor autograd is switched off.
    def sdpa(q_, k_, v_):
        return F.scaled_dot_product_attention(q_, k_, v_, is_causal=causal, scale=scale,
                                              enable_gqa=True)

    return torch.func.vjp(sdpa, q, k, v)[1](dout)


def _reference_fwd(q, k, v, causal, scale, **masks):
    out, lse = reference.attention_ref(q, k, v, causal, scale, upcast=True, **masks)
    return out.to(q.dtype), lse.float()


def _reference_bwd(dout, q, k, v, out, lse, causal, scale, **masks):
    dq, dk, dv = reference.attention_bwd_ref(dout, q, k, v, causal, scale, **masks)
    return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype)


def _reference_fwd_varlen(q, k, v, cu_q, cu_k, max_q, max_k, causal, scale, **masks):
    out, lse = reference.attention_varlen_ref(q, k, v, cu_q, cu_k, causal, scale, **masks)
    return out.to(q.dtype), lse.float()


def _reference_bwd_varlen(dout, q, k, v, out, lse, cu_q, cu_k, max_q, max_k, causal, scale,
                          **masks):
    dq, dk, dv = reference.attention_varlen_bwd_ref(dout, q, k, v, cu_q, cu_k, causal, scale,
                                                    **masks)
    return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype)


register_backend(
    Backend(
        name="triton",
        fwd=_triton_fwd,
        bwd=_triton_bwd,
        description="FlashAttention-2 style Triton kernels (triton_impl/)",
        dtypes=_FLOATS,
        devices=_triton_devices,
        head_dims=frozenset({16, 32, 64, 80, 96, 128, 256}),
        min_capability=(8, 0),
        unavailable=_triton_unavailable,
        extra_reasons=_triton_limits,
        rotate=_triton_rotate,
        unrotates_grads=True,
        packed_grads=True,
        bnhd_out=True,
        masks=frozenset(MASKS),
        fwd_varlen=_triton_fwd_varlen,
        bwd_varlen=_triton_bwd_varlen,
    )
)

register_backend(
    Backend(
        name="triton-unfused",
        fwd=_unfused_fwd,
        bwd=_unfused_bwd,
        description="unfused Triton pipeline (scores, softmax, P·V kernels; float32 scores "
        "written to memory), the baseline fusion is measured against (triton_impl/unfused.py)",
        dtypes=_FLOATS,
        devices=_triton_devices,
        min_capability=(8, 0),
        unavailable=_triton_unavailable,
        extra_reasons=_unfused_limits,
    )
)

register_backend(
    Backend(
        name="cuda",
        fwd=_cuda_fwd,
        bwd=_cuda_bwd,
        description="CUDA C++ kernels (cuda/flash/), JIT-built on first use: Hopper kernels "
        "(TMA, wgmma, warp specialization) on sm_90, FlashAttention-2 style mma.sync kernels "
        "elsewhere (head dims 96 and 256 on sm_90 only)",
        dtypes=_HALF,
        devices=lambda: frozenset({"cuda"}),
        head_dims=frozenset({64, 96, 128, 256}),
        min_capability=(8, 0),
        unavailable=_cuda_unavailable,
        extra_reasons=_cuda_limits,
        fused_rope=True,
        deterministic_modes=True,
    )
)

register_backend(
    Backend(
        name="torch",
        fwd=_torch_fwd,
        bwd=_torch_bwd,
        description="torch.nn.functional.scaled_dot_product_attention (its backward recomputes "
        "the forward under torch.func.vjp; lse from a chunked float32 matmul)",
        dtypes=_FLOATS | {torch.float64},
        devices=lambda: frozenset({"cpu", "cuda"}),
    )
)

register_backend(
    Backend(
        name="reference",
        fwd=_reference_fwd,
        bwd=_reference_bwd,
        description="float64 math that materializes the scores (reference/)",
        dtypes=_FLOATS | {torch.float64},
        devices=lambda: frozenset({"cpu", "cuda"}),
        masks=frozenset(MASKS),
        fwd_varlen=_reference_fwd_varlen,
        bwd_varlen=_reference_bwd_varlen,
    )
)
