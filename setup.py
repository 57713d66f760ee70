"""Installs the Python packages of flashduo: flashduo, triton_impl, reference, bindings.

``FLASHDUO_BUILD_CUDA=1 pip install --no-build-isolation .`` also builds the CUDA extension ahead
of time from the same source list the JIT loader uses (``bindings/sources.py``); without it the
extension is built on first use.
"""

import os

from setuptools import find_packages, setup

ext_modules, cmdclass = [], {}
if os.environ.get("FLASHDUO_BUILD_CUDA") == "1":
    from torch.utils.cpp_extension import BuildExtension, CUDAExtension

    from bindings import sources

    ext_modules = [
        CUDAExtension(
            sources.NAME,
            sources.SOURCES,
            include_dirs=[str(sources.ROOT)],
            extra_compile_args={"cxx": sources.CXX_FLAGS, "nvcc": sources.NVCC_FLAGS},
        )
    ]
    cmdclass = {"build_ext": BuildExtension}

setup(
    name="flashduo",
    version="0.1.0",
    description="FlashAttention forward and backward in Triton and CUDA C++ behind one PyTorch API",
    packages=find_packages(include=["flashduo*", "triton_impl*", "reference*", "bindings*"]),
    python_requires=">=3.10",
    install_requires=["torch>=2.5", "numpy"],  # numpy: Triton's CPU interpreter
    extras_require={"triton": ["triton>=3.1"], "test": ["pytest"], "bench": ["matplotlib"],
                    "lint": ["ruff"]},
    entry_points={"console_scripts": ["flashduo=flashduo.cli:main"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
