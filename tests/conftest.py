import importlib.util
import sys
from pathlib import Path

import pytest


def _prefer_installed_pydeform() -> None:
    """`python -m pytest` in the repository root puts the root first on sys.path, so `import
    pydeform` would find the source tree, which has no compiled module unless it was built in
    place. Then test the installed package, as plain `pytest` does."""
    root = Path(__file__).resolve().parents[1]
    if "pydeform" in sys.modules or any((root / "pydeform").glob("_C*")):
        return
    kept = [p for p in sys.path if Path(p or ".").resolve() != root]
    saved, sys.path[:] = list(sys.path), kept
    spec = importlib.util.find_spec("pydeform")
    if spec is None or spec.origin is None:  # nothing installed: keep the tree (and its clear error)
        sys.path[:] = saved


_prefer_installed_pydeform()

import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
