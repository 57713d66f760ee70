"""Patch timm's ``vit_small_patch16_rope_224`` to run its attention through flashduo, check it
against the unpatched model, and time a bf16 training step against timm's own.

    PYTHONPATH=. python examples/timm_rope_vit.py --backend triton            # GPU: check + timings
    PYTHONPATH=. python examples/timm_rope_vit.py --compile-mode default reduce-overhead max-autotune
    PYTHONPATH=. python examples/timm_rope_vit.py --batch 2 --no-time         # CPU: the check only

Needs timm. The check compares logits and every parameter gradient of one forward+backward in
float32 (layer scales raised from timm's 1e-5 init so attention matters). The timing is a full
training step (forward, backward, AdamW) at ``--batch`` in bf16 autocast: timm eager vs patched
eager, and both under ``torch.compile`` in each ``--compile-mode``.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

import flashduo
from flashduo.integrations import timm as flashduo_timm

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")


def build(name: str, device: str) -> torch.nn.Module:
    import timm

    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False).to(device)
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if "gamma" in pname:
                p.fill_(0.5)
    return model


def check(model: torch.nn.Module, patched: torch.nn.Module, batch: int, device: str,
          dtype: torch.dtype) -> None:
    """Print the largest relative difference of logits and parameter gradients.

    Runs in float32, or under ``dtype`` autocast for a backend without float32 (both models).
    """
    x = torch.randn(batch, 3, 224, 224, device=device)
    tol = 1e-3 if dtype == torch.float32 else 5e-2
    results = []
    for m in (model, patched):
        m.zero_grad()
        with torch.autocast(device, dtype=dtype, enabled=dtype != torch.float32):
            logits = m(x).float()
        logits.square().mean().backward()
        grads = torch.cat([p.grad.flatten() for p in m.parameters() if p.grad is not None])
        results.append((logits.detach(), grads))
    for i, name in enumerate(("logits", "grads")):
        ref, got = results[0][i], results[1][i]
        rel = ((got - ref).abs().max() / ref.abs().max()).item()
        print(f"check {name} ({str(dtype).removeprefix('torch.')}): max rel diff {rel:.2e}")
        if not rel < tol:
            raise SystemExit(f"patched model differs from timm's: {name} rel diff {rel:.2e}")


def step_ms(model: torch.nn.Module, batch: int, device: str, iters: int) -> float:
    """Median ms of one bf16-autocast training step (forward, backward, AdamW)."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch, 3, 224, 224, device=device)
    y = torch.randint(0, 1000, (batch,), device=device)

    def step() -> None:
        with torch.autocast(device, dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):  # warm-up (and compilation)
        step()
    times = []
    for _ in range(iters):
        torch.cuda.synchronize()
        start = time.perf_counter()
        step()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="vit_small_patch16_rope_224")
    parser.add_argument("--backend", default=None, help="flashduo backend (default: automatic)")
    parser.add_argument("--batch", type=int, default=256, help="batch of the timed step")
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--no-time", action="store_true", help="only run the check")
    parser.add_argument("--compile-mode", nargs="+", default=["default"], choices=COMPILE_MODES,
                        help="torch.compile modes to time timm and the patched model under")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"

    model = build(args.model, device)
    patched = flashduo_timm.patch(copy.deepcopy(model), backend=args.backend)
    be = flashduo.get_backend(args.backend) if args.backend else None
    dtype = torch.float32 if be is None or torch.float32 in be.dtypes else torch.bfloat16
    check(model, patched, min(args.batch, 4), device, dtype)
    if args.no_time or device != "cuda":
        return
    timm_eager = step_ms(model, args.batch, device, args.iters)
    ms = step_ms(patched, args.batch, device, args.iters)
    print(f"{'timm eager':34s} {timm_eager:8.2f} ms/step")
    print(f"{'flashduo eager':34s} {ms:8.2f} ms/step   {timm_eager / ms:.2f}x timm eager")
    for mode in args.compile_mode:
        timm_ms = step_ms(compiled(model, mode), args.batch, device, args.iters)
        ms = step_ms(compiled(patched, mode), args.batch, device, args.iters)
        print(f"{'timm compiled (' + mode + ')':34s} {timm_ms:8.2f} ms/step")
        print(f"{'flashduo compiled (' + mode + ')':34s} {ms:8.2f} ms/step   "
              f"{timm_ms / ms:.2f}x timm compiled ({mode})")


def compiled(model: torch.nn.Module, mode: str) -> torch.nn.Module:
    """A compiled copy of ``model``: ``mode`` is torch.compile's (``default`` for none given)."""
    torch._dynamo.reset()
    return torch.compile(copy.deepcopy(model), mode=None if mode == "default" else mode)


if __name__ == "__main__":
    main()
