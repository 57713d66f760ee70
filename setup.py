"""Installs the Python packages of flashduo: flashduo, triton_impl, reference, bindings."""

from setuptools import setup

setup(
    name="flashduo",
    version="0.1.0",
    description="FlashAttention forward and backward in Triton and CUDA C++ behind one PyTorch API",
    packages=["flashduo", "triton_impl", "reference", "bindings"],
    python_requires=">=3.10",
    install_requires=["torch>=2.5"],
    extras_require={"triton": ["triton>=3.1"], "test": ["pytest"]},
    entry_points={"console_scripts": ["flashduo=flashduo.cli:main"]},
)
