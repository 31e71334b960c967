"""Static analysis of the NT-Xent kernels: what they compile to on sm_80/86/89/90, without a GPU.

`fastclr bench static` (cli.py) compiles every config the autotuner can keep (cases.py, with
kernels/configs.py's own shared-memory prune fed each architecture's limit from arches.py) through
Triton's ahead-of-time path (triton_compile.py), reads registers, spills and shared memory from the
cubin and the hot loop from its SASS (sass.py), derives occupancy (occupancy.py) and, for sm_90, the
roofline's ESTIMATED times on H100/H200 (roofline.py); the CUDA extension gets the same from nvcc
(cuda_ext.py). analysis.run() returns the result document, render.py writes it as JSON + Markdown.
Needs ptxas/nvdisasm/cuobjdump (shipped with triton) and nvcc for the CUDA part; no GPU, no driver.
"""
