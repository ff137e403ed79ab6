"""Every CPU build of the kernels (portable x86-64, AVX2, AVX-512; picked at run time,
csrc/common/cpu_dispatch.h) computes the same values: each is forced in a subprocess with
PYDEFORM_CPU_ISA and compared with the pure-torch reference ops. A cap above what the CPU has
runs the widest build it has, so on any machine every build it can run is covered."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pydeform.ops import reference

# Seeded inputs through `ops` (pydeform.ops, or the reference ops), forward and backward
# (gradients of a fixed weighted sum). Source text, so that a subprocess runs the same code.
COMPUTE = r"""
import torch


def compute(ops):
    torch.manual_seed(0)
    results = {}
    for dtype in (torch.float32, torch.float64):
        # Odd sizes: partial vectors at every row end. Near-identity homographies, some taps outside.
        x = torch.randn(2, 5, 23, 37, dtype=dtype, requires_grad=True)
        h = (torch.eye(3, dtype=dtype) + 0.05 * torch.randn(2, 3, 3, dtype=dtype)).requires_grad_()
        out = ops.homography_sample(x, h, coords="normalized")
        weight = torch.randn_like(out)
        results[f"homography_{dtype}"] = [out, *torch.autograd.grad((out * weight).sum(), (x, h))]
        y = torch.randn(2, 5, 23, 37, dtype=dtype, requires_grad=True)
        for p in (1, 2):
            dist, index = ops.patch_nn_distance(x, y, 5, p)
            grads = torch.autograd.grad((dist * torch.randn_like(dist)).sum(), (x, y))
            results[f"patch_nn_p{p}_{dtype}"] = [dist, index, *grads]
        theta = torch.tensor([[1.0, 0.1, 2.0], [-0.1, 0.9, -1.5]], dtype=dtype).expand(2, 3, 2, 3).clone()
        theta = (theta + 0.1 * torch.randn_like(theta)).requires_grad_()
        mask = torch.rand(2, 3, 23, 37, dtype=dtype, requires_grad=True)
        out = ops.multi_affine_warp(x, theta, mask, include_identity=True)
        results[f"affine_{dtype}"] = [out, *torch.autograd.grad((out * torch.randn_like(out)).sum(), (x, theta, mask))]
    return {k: [t.detach() for t in v] for k, v in results.items()}
"""
SCRIPT = COMPUTE + "\nimport sys\nfrom pydeform import ops\ntorch.save(compute(ops), sys.argv[1])\n"


def run_build(isa: str, path: Path) -> dict:
    env = {**os.environ, "PYDEFORM_CPU_ISA": isa, "OMP_NUM_THREADS": "2"}
    # Run outside the repository, so that the installed package (not the source tree) is imported.
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(path)], env=env, cwd=path.parent, capture_output=True,
                          text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return torch.load(path)


def reference_values() -> dict:
    """The same computation with the pure-torch reference ops, in this process."""
    namespace: dict = {}
    exec(COMPUTE, namespace)
    return namespace["compute"](reference)


@pytest.mark.parametrize("isa", ["portable", "avx2", "avx512"])
def test_every_cpu_build_matches_the_reference(isa, tmp_path):
    got, want = run_build(isa, tmp_path / "out.pt"), reference_values()
    assert got.keys() == want.keys()
    for name, tensors in want.items():
        # Gradients to h and theta are sums over every pixel: the tolerance scales with the largest value.
        eps = 1e-5 if "float32" in name else 1e-11
        for index, (g, w) in enumerate(zip(got[name], tensors, strict=True)):
            tol = {"rtol": 10 * eps, "atol": 10 * eps * max(1.0, float(w.abs().max()))}
            if g.dtype == torch.int64:  # nearest-neighbour indices: ties are measure-zero here
                assert torch.equal(g, w), f"{isa} {name} output {index}"
            else:
                torch.testing.assert_close(g, w, **tol, msg=f"{isa} {name} output {index}")


def test_an_unknown_isa_is_refused_at_import(tmp_path):
    env = {**os.environ, "PYDEFORM_CPU_ISA": "sse9"}
    done = subprocess.run([sys.executable, "-c", "import pydeform.ops"], env=env, cwd=tmp_path, capture_output=True,
                          text=True)  # fmt: skip
    assert done.returncode != 0 and "PYDEFORM_CPU_ISA must be one of portable, avx2, avx512" in done.stderr
