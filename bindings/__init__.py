"""pybind11 bindings for the CUDA C++ kernels in cuda/ and the loader that JIT-builds them."""
