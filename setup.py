"""Packaging: maps kernels/ to fastclr.kernels and csrc/ to fastclr.csrc (the CUDA sources, JIT-compiled
with ninja on first use). With FASTCLR_BUILD_CUDA=1 the extension is built ahead of time as
fastclr._C_nt_xent instead; that needs torch in the build environment:

    FASTCLR_BUILD_CUDA=1 pip install --no-build-isolation .

CUDA_HOME defaults to /usr/local/cuda and TORCH_CUDA_ARCH_LIST to "8.0;9.0+PTX" when unset.
"""

import os

from setuptools import find_packages, setup

CUDA_SOURCES = ["csrc/nt_xent.cpp", "csrc/nt_xent_forward.cu", "csrc/nt_xent_backward.cu"]

packages = find_packages(include=["fastclr", "fastclr.*"]) + ["fastclr.kernels", "fastclr.csrc"]
ext_modules = []
cmdclass = {}

if os.environ.get("FASTCLR_BUILD_CUDA") == "1":
    # cpp_extension reads CUDA_HOME when imported; without a visible GPU it needs the arch list.
    os.environ.setdefault("CUDA_HOME", "/usr/local/cuda")
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0+PTX")
    from torch.utils.cpp_extension import BuildExtension, CUDAExtension

    ext_modules.append(
        CUDAExtension(
            name="fastclr._C_nt_xent",
            sources=CUDA_SOURCES,
            include_dirs=[os.path.abspath("csrc")],
            extra_compile_args={"cxx": ["-O3"], "nvcc": ["-O3", "-lineinfo"]},
        )
    )
    cmdclass["build_ext"] = BuildExtension.with_options(use_ninja=True)

setup(
    packages=packages,
    package_dir={"fastclr.kernels": "kernels", "fastclr.csrc": "csrc"},
    package_data={"fastclr.csrc": ["*.cpp", "*.cu", "*.cuh", "*.h"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
