"""The suite catches real launch-code defects: two deliberately broken builds of patch_nn's
tiled forward (cmake/cuda_emulation.cmake makes them from the real .cu by a text edit).

- broken_sync: the __syncthreads() after a channel's costs are summed is removed, so the
  threads that go first overwrite the shared tile with the next channel while later threads
  still read it. The comparison with the CPU kernel fails.
- broken_bound: the tile's row bound is i <= H instead of i < H, so the row below the image is
  computed and written one row past `dist`. AddressSanitizer stops the run (in a subprocess
  here); without it the stray row lands silently in memory nobody checks."""
import subprocess
import sys
import textwrap

import pytest
import torch

from cuda_emulation.emulation import assert_close, load, patch_nn_forward


def test_missing_syncthreads_is_caught():
    broken = load("_cuda_emulation_broken_sync")
    assert broken.variant == "broken_sync"
    x, y = torch.randn(2, 3, 13, 37), torch.randn(2, 3, 13, 37)
    cpu_dist, cpu_index = torch.ops.pydeform.patch_nn_distance(x, y, 3, 1)
    dist, index = patch_nn_forward(broken, x, y, 3, 1)
    with pytest.raises(AssertionError) as failure:
        assert torch.equal(index, cpu_index), f"index differs in {int((index != cpu_index).sum())} of {index.numel()}"
        assert_close("patch_nn dist (broken_sync)", dist, cpu_dist, torch.float32)
    print("the broken kernel fails as it should:", failure.value)
    # The same launcher without the defect agrees (the test above is not failing for another reason).
    good = load("_cuda_emulation")
    assert torch.equal(patch_nn_forward(good, x, y, 3, 1)[1], cpu_index)


_OUT_OF_BOUNDS_SCRIPT = textwrap.dedent(
    """
    import importlib.util, sys, torch
    spec = importlib.util.spec_from_file_location("_cuda_emulation_broken_bound", sys.argv[1])
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    B, C, H, W = 1, 2, 13, 37  # H is no multiple of the 8-row tile: the last tile has rows past H
    # x and y end one row before their allocation does, so that the broken kernel's read of
    # x's row H stays inside memory and what ASan reports is the write one row past dist.
    x = torch.randn(B * C * H * W + W)[: B * C * H * W].view(B, C, H, W)
    y = torch.randn(B * C * H * W + W)[: B * C * H * W].view(B, C, H, W)
    dist, index = torch.empty(B, H, W), torch.empty(B, H, W, dtype=torch.int64)
    mod.patch_nn_forward_cuda(x.data_ptr(), y.data_ptr(), dist.data_ptr(), index.data_ptr(), B, C, H, W, 3, 1, 0, 0, 0)
    print("no error")
    """
)


def test_out_of_bounds_write_is_caught_by_asan():
    broken = load("_cuda_emulation_broken_bound")
    if "address" not in broken.sanitizers:
        pytest.skip("needs the AddressSanitizer build (PYDEFORM_SANITIZE=address,undefined)")
    result = subprocess.run(
        [sys.executable, "-c", _OUT_OF_BOUNDS_SCRIPT, broken.__file__], capture_output=True, text=True, timeout=300
    )
    report = result.stderr[result.stderr.find("==ERROR"):]
    print(report[:2500])
    assert result.returncode != 0 and "no error" not in result.stdout
    assert "ERROR: AddressSanitizer: heap-buffer-overflow" in report
    assert "WRITE of size" in report.splitlines()[1]  # the write past dist
    assert "forward_tiled" in report  # in the kernel
