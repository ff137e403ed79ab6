"""The build's configuration logic, without building: the default CUDA architecture list chosen
from the nvcc version (cmake/cuda_architectures.cmake)."""
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("cmake") is None, reason="needs cmake")
def test_default_cuda_architectures_per_nvcc_version(tmp_path):
    script = ROOT / "tests" / "cmake" / "test_cuda_architectures.cmake"
    result = subprocess.run(
        ["cmake", f"-DWORK_DIR={tmp_path}", "-P", str(script)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "all cases pass" in result.stdout + result.stderr
