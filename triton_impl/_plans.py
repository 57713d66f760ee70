"""Launch plans: a call's kernel launches recorded once, then replayed on later calls' tensors.

Before each launch, a call of a Triton launcher forms a few dozen kernel arguments (strides,
sizes, flags, scalars), finds the tuned config of its shape class and the compiled kernel of its
argument signature: host time that at ViT sizes is a large share of a call (measured in
docs/perf-notes.md, Triton v1.13). All of it but the tensors is fixed by what the caller puts in
a plan's *key* (shapes, strides, dtypes, 16-byte alignment, scalars, flags). So the first call of
a key whose launches are all direct launches of remembered kernels (``_config._launch_compiled``)
is recorded, and later calls of that key launch the same compiled kernels with the same arguments
and grids, only their tensors swapped in.

Plans are off unless ``FLASHDUO_LAUNCH_PLANS=1`` is set before triton_impl is imported: they
become the default once the GPU suite has run with them (docs/perf-notes.md, Triton v1.13). A
call is not recorded, and always takes the launchers' own path, while it tunes or compiles,
under the interpreter, inside ``torch.compile``'s recording (``_traced``), with a forced config,
with ``FLASHDUO_DIRECT_LAUNCH=0`` or a launch hook (a profiler) installed, or when one of its
tensors is passed twice (their places in the arguments would be ambiguous).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import torch

from triton_impl import _config, _traced
from triton_impl._env import interpreting

# Whether calls may be recorded at all, read as triton_impl is imported: ``FLASHDUO_LAUNCH_PLANS=1``
# set, and kernels built for the GPU (under the interpreter no launch goes direct).
ENABLED = os.environ.get("FLASHDUO_LAUNCH_PLANS", "0") == "1" and not interpreting()

# Plans kept before a ``Plans`` starts afresh (a caller whose shapes keep changing).
PLAN_LIMIT = 1024


class _Plan:
    """The launches of one recorded call: for each, the compiled kernel, grid, arguments with
    each tensor's place noted as an index into the call's tensors (and for a host tensor
    descriptor, of its base tensor, with the descriptor's other fields), and the argument tail."""

    def __init__(self, steps: list[tuple], named: list[tuple]) -> None:
        self.steps = steps
        self.named = named
        # the config and kernel tables it was recorded under (kept alive, compared by identity:
        # a table swapped for another, as tests do, makes the plan stale)
        self.tables = (_config._CHOSEN, _config._COMPILED)

    def current(self) -> bool:
        """Whether the config and kernel tables are still those it was recorded under."""
        chosen, compiled = self.tables
        return chosen is _config._CHOSEN and compiled is _config._COMPILED

    @classmethod
    def build(cls, rec: _config.Recording, tensors: Sequence[torch.Tensor | None]) -> _Plan | None:
        """The plan of a recording, or None where a launch did not go direct or passed a tensor
        that is not one of ``tensors`` (a view made inside the call, say)."""
        index = {id(t): i for i, t in enumerate(tensors) if t is not None}
        if not rec.launches or len(index) < sum(t is not None for t in tensors):
            return None
        steps = []
        for launch in rec.launches:
            if launch is None:
                return None
            compiled, grid, args, tail = launch
            template, slots = list(args), []
            for pos, arg in enumerate(args):
                base = getattr(arg, "base", None) if hasattr(arg, "block_shape") else None
                if isinstance(arg, torch.Tensor) or isinstance(base, torch.Tensor):
                    slot = index.get(id(arg if base is None else base))
                    if slot is None or base is not None and not hasattr(arg, "__dict__"):
                        return None
                    slots.append((pos, slot, None if base is None else _fields(arg)))
                    template[pos] = None
            steps.append((compiled, grid, tuple(template), tuple(slots), tail))
        return cls(steps, list(rec.named))

    def replay(self, tensors: Sequence[torch.Tensor | None], device: int) -> None:
        stream = _config.driver.active.get_current_stream(device)
        for compiled, (x, y, z), template, slots, tail in self.steps:
            args = list(template)
            for pos, slot, desc in slots:
                args[pos] = tensors[slot] if desc is None else _described(desc, tensors[slot])
            compiled.run(x, y, z, stream, compiled.function, compiled.packed_metadata, None,
                         None, None, *args, *tail)
        for name, config in self.named:
            _config.record_launch(name, config)


def _fields(desc) -> tuple[type, dict]:
    """A host tensor descriptor's class and fields but its base (which the plan must not keep
    alive)."""
    return type(desc), {name: value for name, value in desc.__dict__.items() if name != "base"}


def _described(desc: tuple[type, dict], base: torch.Tensor):
    """A host tensor descriptor like the recorded one (``_fields``) on another base tensor."""
    cls, fields = desc
    made = object.__new__(cls)
    made.__dict__.update(fields, base=base)
    return made


class Plans:
    """The plans of one launcher, by key."""

    def __init__(self) -> None:
        self._plans: dict[tuple, _Plan] = {}

    def launch(self, key: tuple | None, tensors: Sequence[torch.Tensor | None],
               run: Callable[[], None]) -> None:
        """Launch a call: replay the plan of ``key`` on ``tensors`` (every tensor the call's
        launches take, and only those; None for an absent one) where there is one, else
        ``run()`` it, recording a plan for ``key`` where it can. ``key``: everything the launches'
        arguments, grids and configs depend on besides the tensors, or None for a call that
        must not be planned (build a key only where ``on()``). ``run`` must do its GPU work
        through ``_config``'s launches only: a replay does nothing else."""
        if key is None or _config.recorder() is not None:
            run()
            return
        device = _config.driver.active.get_current_device()
        key = (key, device)
        plan = self._plans.get(key)
        if plan is not None and plan.current() and not _config._hooked():
            plan.replay(tensors, device)
            return
        rec = _config.Recording()
        _config.start_recording(rec)
        try:
            run()
        finally:
            _config.start_recording(None)
        plan = _Plan.build(rec, tensors)
        if plan is not None:
            if len(self._plans) >= PLAN_LIMIT:
                self._plans.clear()
            self._plans[key] = plan

    @staticmethod
    def on() -> bool:
        """Whether calls may be recorded and replayed now: plans ``ENABLED``, direct launches on,
        and not inside ``torch.compile``'s recording (``_traced``)."""
        return ENABLED and not _traced.active() and _config.direct_launch()

    def __len__(self) -> int:
        return len(self._plans)


def aligned(*tensors: torch.Tensor | None) -> tuple[bool | None, ...]:
    """Each tensor's 16-byte alignment (None for an absent one), a plan key's share of the
    argument signature that ``_config._signature`` forms."""
    return tuple(None if t is None else t.data_ptr() & 15 == 0 for t in tensors)
