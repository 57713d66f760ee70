"""JIT-build and load the CUDA extension with ``torch.utils.cpp_extension.load``.

The build goes into a persistent cache directory (``FLASHDUO_BUILD_DIR``, default
``~/.cache/flashduo/torch<version>-sm<arch>-<hash of the source tree's path>``): nothing is
rebuilt unless a source or flag changes, and a second process of the same checkout reuses the
build. The architecture is the visible GPU's;
``TORCH_CUDA_ARCH_LIST`` wins when set, and ``9.0`` is used when no GPU is visible, so the
extension also compiles on machines without one; ``9.0`` is always built as ``9.0a``.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import pathlib
import shutil
from types import ModuleType

import torch

from bindings import sources

_MODULE: ModuleType | None = None


def cuda_home() -> str:
    """The CUDA toolkit root: CUDA_HOME / CUDA_PATH, /usr/local/cuda, or the one nvcc lives in."""
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(str(pathlib.Path(nvcc).resolve().parent.parent))
    for home in candidates:
        if home and (pathlib.Path(home) / "include" / "cuda_runtime.h").is_file() and (
            pathlib.Path(home) / "bin" / "nvcc"
        ).exists():
            return home
    raise RuntimeError(
        "the CUDA backend needs the CUDA toolkit (nvcc and its headers) to build its kernels, "
        "and none was found: install it or set CUDA_HOME to its root"
    )


def arch_list() -> str:
    """TORCH_CUDA_ARCH_LIST if set, else the visible GPU's compute capability, else 9.0; 9.0 is
    built as 9.0a, the target that has wgmma and setmaxnreg (the Hopper forward), whose cubin runs
    on every sm_90 GPU."""
    if os.environ.get("TORCH_CUDA_ARCH_LIST"):
        archs = os.environ["TORCH_CUDA_ARCH_LIST"]
    elif torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability()
        archs = f"{major}.{minor}"
    else:
        archs = "9.0"
    return ";".join("9.0a" if a == "9.0" else a for a in archs.replace(" ", ";").split(";") if a)


def build_dir(arch: str) -> pathlib.Path:
    """Where the extension is built and cached: one folder per torch version, architecture and
    source tree. The build files hold the sources' absolute paths, so two checkouts never share
    (and never overwrite) one build; each reuses its own."""
    root = os.environ.get("FLASHDUO_BUILD_DIR")
    base = pathlib.Path(root) if root else pathlib.Path.home() / ".cache" / "flashduo"
    tree = hashlib.sha1(str(sources.ROOT).encode()).hexdigest()[:12]
    tag = (f"torch{torch.__version__.split('+')[0]}-sm{arch.replace('.', '').replace(';', '_')}"
           f"-{tree}")
    path = base / tag
    path.mkdir(parents=True, exist_ok=True)
    return path


def load(verbose: bool = False) -> ModuleType:
    """Build (first time) and import the extension; later calls return the same module."""
    global _MODULE
    if _MODULE is not None:
        return _MODULE
    try:  # built ahead of time by `FLASHDUO_BUILD_CUDA=1 pip install .`
        _MODULE = importlib.import_module(sources.NAME)
        return _MODULE
    except ImportError:
        pass
    if torch.version.cuda is None:
        raise RuntimeError(
            f"torch {torch.__version__} is a CPU-only build: the CUDA backend needs a CUDA build"
        )
    home = cuda_home()
    arch = arch_list()
    os.environ["CUDA_HOME"] = home
    os.environ["TORCH_CUDA_ARCH_LIST"] = arch
    from torch.utils import cpp_extension

    cpp_extension.CUDA_HOME = home
    _MODULE = cpp_extension.load(
        name=sources.NAME,
        sources=sources.source_paths(),
        extra_cflags=sources.CXX_FLAGS,
        extra_cuda_cflags=sources.NVCC_FLAGS,
        extra_include_paths=[str(sources.ROOT)],
        build_directory=str(build_dir(arch)),
        verbose=verbose,
    )
    return _MODULE
