"""The bridge to the compiled module: dtype codes, raw pointers and the per-device launcher
lookup. Every op calls the kernels through `launch`, after Python allocated the outputs."""
from __future__ import annotations

import os

import torch

# PYDEFORM_CPU_ISA caps the instruction set of the CPU kernels (csrc/common/cpu_dispatch.h),
# read once by the compiled module; the tests use it to run every build on one machine.
CPU_ISAS = ("portable", "avx2", "avx512")
if os.environ.get("PYDEFORM_CPU_ISA", "") not in ("", *CPU_ISAS):
    raise ValueError(f"PYDEFORM_CPU_ISA must be one of {', '.join(CPU_ISAS)} (or unset), "
                     f"got {os.environ['PYDEFORM_CPU_ISA']!r}")  # fmt: skip

try:
    from pydeform import _C
except ImportError as exc:  # pragma: no cover - only when the package was not built
    from pathlib import Path

    _package = Path(__file__).resolve().parents[1]
    if (_package.parent / "pyproject.toml").exists():
        # Imported from a source checkout (e.g. `python -m pytest` in the repository root puts
        # the root first on sys.path), whatever is installed.
        raise ImportError(
            f"pydeform was imported from the source tree {_package}, which has no compiled module "
            "(`python -m pytest` and `python` in the repository root import the tree, not the installed "
            "package). Run the tests with `pytest` and scripts from another directory to use the installed "
            "package (after `pip install .`)"
        ) from exc
    raise ImportError(
        "pydeform's compiled module is missing: install the package with `pip install .`"
    ) from exc

DTYPE_CODES = {torch.float32: 0, torch.float64: 1, torch.float16: 2, torch.bfloat16: 3}
CPU_DTYPES = (torch.float32, torch.float64)
CUDA_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def ptr(t: torch.Tensor | None) -> int:
    """Address of a contiguous tensor's data, or 0 for 'not wanted'."""
    return 0 if t is None else t.data_ptr()


def launch(name: str, device: torch.device, *args) -> None:
    """Run launcher `name` on `device`. The CPU launchers take torch's thread count last;
    the CUDA ones take the device index and torch's current stream."""
    if device.type == "cpu":
        getattr(_C, f"{name}_cpu")(*args, torch.get_num_threads())
    elif device.type == "cuda":
        if not _C.build_info()["cuda"]:
            raise RuntimeError(
                "pydeform was built without CUDA kernels; reinstall with nvcc on PATH "
                "(PYDEFORM_CUDA=ON makes a missing compiler an error)"
            )
        index = device.index if device.index is not None else torch.cuda.current_device()
        stream = torch.cuda.current_stream(index).cuda_stream
        getattr(_C, f"{name}_cuda")(*args, index, stream)
    else:
        raise ValueError(f"pydeform has kernels for cpu and cuda tensors, got device {device}")


def backend_info() -> dict:
    """What was compiled: CPU (with OpenMP and its thread count) and CUDA (with the
    architectures), and how many CUDA devices the runtime sees now."""
    info = dict(_C.build_info())
    info["cpu"] = True
    info["cuda_devices"] = _C.cuda_device_count() if info["cuda"] else 0
    return info
