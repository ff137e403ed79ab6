"""The emulation itself (csrc/common/cuda_emulation.h): barriers, shared memory, atomics, launch
limits, and that a barrier some threads never reach is an error, not a hang."""
import subprocess
import sys

import pytest


def test_shared_memory_and_barrier(emu):
    out, _ = emu.selftest("shared_reverse")
    assert out == [b * 64 + 63 - t for b in range(4) for t in range(64)]


def test_atomic_add_over_blocks_and_threads(emu):
    assert emu.selftest("atomic_sum")[1] == 3 * 2 * 32 * 4


@pytest.mark.parametrize("kernel", ["divergent_sync", "early_return"])
def test_divergent_barrier_is_an_error(emu, kernel):
    with pytest.raises(RuntimeError, match="divergent __syncthreads"):
        emu.selftest(kernel)
    emu.selftest("shared_reverse")  # the emulation still works afterwards


def test_invalid_launch_configuration(emu):
    with pytest.raises(RuntimeError, match="invalid launch configuration"):
        emu.selftest("bad_config")


def test_endless_thread_aborts_after_the_timeout(emu):
    script = (
        "import importlib.util, sys\n"
        "spec = importlib.util.spec_from_file_location('_cuda_emulation', sys.argv[1])\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        "m.set_barrier_timeout(1); m.selftest('endless')\n"
    )
    result = subprocess.run([sys.executable, "-c", script, emu.__file__], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "has not reached __syncthreads() or the end of the block within 1 s" in result.stderr
