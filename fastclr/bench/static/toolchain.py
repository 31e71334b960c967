"""Where the NVIDIA binary tools come from, and a clear error when one is missing.

Triton ships ptxas, nvdisasm and cuobjdump in triton/backends/nvidia/bin (the ptxas it compiles with);
a CUDA toolkit has them in $CUDA_HOME/bin. nvcc (only for the CUDA extension) comes from the toolkit.
"""

import os
import shutil
from pathlib import Path

from fastclr.errors import UsageError

HOW_TO_GET = {
    "ptxas": "pip install triton (ships it in triton/backends/nvidia/bin) or install the CUDA toolkit",
    "nvdisasm": "pip install triton (ships it in triton/backends/nvidia/bin) or install the CUDA "
    "toolkit (cuda-nvdisasm)",
    "cuobjdump": "pip install triton (ships it in triton/backends/nvidia/bin) or install the CUDA "
    "toolkit (cuda-cuobjdump)",
    "nvcc": "install the CUDA toolkit (e.g. apt-get install cuda-nvcc-12-8) and set CUDA_HOME, or "
    "pass --no-cuda to skip the CUDA extension",
}


def _candidates(name: str) -> list[Path]:
    places = []
    try:
        import triton

        places.append(Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name)
    except ImportError:
        pass
    cuda_home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH") or "/usr/local/cuda"
    places.append(Path(cuda_home) / "bin" / name)
    found = shutil.which(name)
    if found:
        places.append(Path(found))
    return places


def find_tool(name: str) -> Path | None:
    """Path of an executable NVIDIA tool (triton's copy first: the one its compiles use), or None."""
    for path in _candidates(name):
        if path.is_file() and os.access(path, os.X_OK):
            return path
    return None


def missing_tools(names: tuple[str, ...]) -> list[str]:
    """'<tool> (how to get it)' for each of `names` that cannot be found."""
    return [f"{name} ({HOW_TO_GET[name]})" for name in names if find_tool(name) is None]


def require_tools(names: tuple[str, ...]) -> dict[str, Path]:
    """{name: path} of the tools, or a UsageError naming every missing one and how to get it."""
    missing = missing_tools(names)
    if missing:
        raise UsageError("static analysis needs " + "; ".join(missing))
    return {name: find_tool(name) for name in names}
