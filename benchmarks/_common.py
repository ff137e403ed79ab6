"""Shared benchmark machinery: the machine's own limits, alternating timing, peak memory
measured the same way for every implementation, the results table and the JSON file.

Record keys: case, impl, device, fwd_ms, fwd_bwd_ms, peak_mb (peak of forward+backward
above what was allocated before it, inputs excluded), and for the op benchmarks
floor_fwd_ms / floor_fwd_bwd_ms: the least time the op's contract allows on this machine
(`Cost`). The JSON file holds {"machine", "load_start", "load_end", "threads", "cores",
"loaded", "records"}. A run during which the load average exceeded the number of cores is
marked "loaded": load slows torch's multi-threaded ops more than ours, so its ratios are
inflated and its figures are not results.

CPU peak memory is measured in a child process (the same script, `PEAKS_CHILD` set) that
does nothing else, with glibc returning every block above 64 KiB to the OS on free; the
timing runs in the parent with glibc's default allocator, which after the warm-up reuses
freed blocks as a training loop does. (Timing under the peak setting made every tensor a
fresh mapping: page faults took a quarter to a third of a kernel's measured time.)
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch


@dataclass
class Record:
    case: str
    impl: str
    device: str
    fwd_ms: float
    fwd_bwd_ms: float
    peak_mb: float
    floor_fwd_ms: float | None = None
    floor_fwd_bwd_ms: float | None = None


@dataclass
class Impl:
    """One implementation of a case: closures that run the forward and forward+backward."""

    name: str
    forward: Callable[[], object]
    forward_backward: Callable[[], object]


PEAKS_CHILD = "PYDEFORM_BENCH_PEAKS"  # set in the child: where it writes the CPU peaks (JSON)
_cpu_peaks: dict[tuple[str, str], float] = {}  # (case, impl) -> MB, from the child


_LOAD_BEFORE: list[tuple[float, float, float]] = []  # the load average before the peak-memory child ran


def parse_args(description: str, flags: dict[str, str] | None = None) -> argparse.Namespace:
    """The shared options, plus a script's own on/off `flags` {"--flag": help}, which the
    peak-memory child gets too (so that it measures the same cases)."""
    _LOAD_BEFORE.append(os.getloadavg())
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--device", choices=["cpu", "cuda", "all"], default="all", help="'all': cpu, and cuda when present")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per implementation (median reported)")
    parser.add_argument("--json", metavar="PATH", help="write the records as a JSON file")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    for flag, text in (flags or {}).items():
        parser.add_argument(flag, action="store_true", help=text)
    args = parser.parse_args()
    if PEAKS_CHILD not in os.environ and any(d.type == "cpu" for d in devices(args.device)):
        chosen = [flag for flag in flags or {} if getattr(args, flag.lstrip("-").replace("-", "_"))]
        _cpu_peaks.update(_measure_cpu_peaks_in_child(chosen))
    return args


def _measure_cpu_peaks_in_child(flags: list[str]) -> dict[tuple[str, str], float]:
    print("measuring CPU peak memory in a child process ...", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "peaks.json")
        done = subprocess.run([sys.executable, sys.argv[0], "--device", "cpu", "--repeats", "1", *flags],
                              env={**os.environ, PEAKS_CHILD: path}, capture_output=True, text=True)  # fmt: skip
        if done.returncode != 0:
            sys.exit(f"the peak-memory child failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
        with open(path) as f:
            return {(case, impl): peak for case, impl, peak in json.load(f)}


def devices(choice: str) -> list[torch.device]:
    if choice == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device is available")
    wanted = ["cpu", "cuda"] if choice == "all" else [choice]
    return [torch.device(d) for d in wanted if d == "cpu" or torch.cuda.is_available()]


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{_cpu_model()} ({torch.get_num_threads()} threads)"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_once(fn: Callable[[], object], device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return (time.perf_counter() - start) * 1e3


# ----------------------------------------------------------------------------- the machine's limits


@dataclass
class Machine:
    """The limits of a device at the thread count in use, measured with torch: streaming
    bandwidth (c = a + b on 256 MB float32 arrays, 2 reads and 1 write per element) and
    peak FMA throughput (a 2048^3 float32 matrix product, 2 FLOPs per multiply-add)."""

    device: str
    threads: int
    bandwidth_gbs: float
    peak_gflops: float


def measure_machine(device: torch.device, repeats: int = 5) -> Machine:
    if PEAKS_CHILD in os.environ:  # the child measures memory only
        return Machine(device_name(device), torch.get_num_threads(), float("nan"), float("nan"))
    n = 64 * 2**20
    a, b = torch.rand(n, device=device), torch.rand(n, device=device)
    c = torch.empty_like(a)
    torch.add(a, b, out=c)
    add_ms = statistics.median(_time_once(lambda: torch.add(a, b, out=c), device) for _ in range(repeats))
    m = 2048
    x, y = torch.rand(m, m, device=device), torch.rand(m, m, device=device)
    z = torch.empty_like(x)
    torch.mm(x, y, out=z)
    mm_ms = statistics.median(_time_once(lambda: torch.mm(x, y, out=z), device) for _ in range(repeats))
    machine = Machine(device_name(device), torch.get_num_threads(), 3 * 4 * n / (add_ms * 1e-3) / 1e9,
                      2 * m**3 / (mm_ms * 1e-3) / 1e9)  # fmt: skip
    print(f"machine: {machine.device}: streaming {machine.bandwidth_gbs:.1f} GB/s, "
          f"sgemm {machine.peak_gflops:.0f} GFLOP/s", flush=True)  # fmt: skip
    return machine


@dataclass
class Cost:
    """What an op's contract requires of any implementation: the bytes moved (each input
    read once, each output written once) and the arithmetic (FLOPs), of the forward and of
    the backward. A pass's floor is the larger of bytes / bandwidth and FLOPs / peak."""

    fwd_bytes: float
    fwd_flops: float
    bwd_bytes: float
    bwd_flops: float

    def floors_ms(self, machine: Machine) -> tuple[float, float]:
        """(forward floor, forward+backward floor) in ms on `machine`."""

        def floor(nbytes: float, flops: float) -> float:
            return max(nbytes / (machine.bandwidth_gbs * 1e9), flops / (machine.peak_gflops * 1e9)) * 1e3

        return floor(self.fwd_bytes, self.fwd_flops), floor(self.fwd_bytes + self.bwd_bytes, self.fwd_flops + self.bwd_flops)


class Session:
    """One benchmark run: the load average at its start and end, the thread count, each
    device's limits (measured once, on first use) and the JSON file."""

    def __init__(self) -> None:
        self.cores = os.cpu_count() or 1
        self.load_start = _LOAD_BEFORE[0] if _LOAD_BEFORE else os.getloadavg()  # before the peak-memory child
        self.machines: dict[str, Machine] = {}
        print(f"load average (1, 5, 15 min) {self.load_start}, {torch.get_num_threads()} threads, {self.cores} cores",
              flush=True)  # fmt: skip
        if self.load_start[0] > self.cores:
            print(f"WARNING: load average {self.load_start[0]:.1f} > {self.cores} cores: these figures will not be "
                  "results (load slows torch's multi-threaded ops most)", flush=True)  # fmt: skip

    def machine(self, device: torch.device) -> Machine:
        if device.type not in self.machines:
            self.machines[device.type] = measure_machine(device)
        return self.machines[device.type]

    def finish(self, records: list[Record], path: str | None) -> None:
        load_end = os.getloadavg()
        loaded = max(self.load_start[0], load_end[0]) > self.cores
        print(f"\nload average at the end {load_end}" + (
            f"; LOADED (above {self.cores} cores): not a result" if loaded else ""), flush=True)  # fmt: skip
        if path:
            document = {
                "machine": {kind: asdict(machine) for kind, machine in self.machines.items()},
                "load_start": self.load_start, "load_end": load_end, "threads": torch.get_num_threads(),
                "cores": self.cores, "loaded": loaded, "records": [asdict(r) for r in records],
            }  # fmt: skip
            with open(path, "w") as f:
                json.dump(document, f, indent=2)
            print(f"wrote {len(records)} records to {path}")


# ----------------------------------------------------------------------------- timing and memory


def _rss_mb(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{key} not in /proc/self/status")


def _return_freed_blocks_to_the_os() -> None:
    # A fixed mmap threshold makes glibc return every large block to the OS on free, so a
    # freed tensor of one implementation cannot hide the next one's peak.
    ctypes.CDLL("libc.so.6").mallopt(-3, 1 << 16)  # M_MMAP_THRESHOLD = 64 KiB


def peak_mb(fn: Callable[[], object], device: torch.device) -> float:
    """Peak memory of one call above what was in use before it.

    CUDA: torch's caching-allocator peak. CPU: the process's resident high-water mark
    (reset through /proc/self/clear_refs), so memory allocated by anyone counts.
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = _rss_mb("VmRSS:")
    fn()
    return _rss_mb("VmHWM:") - base


def measure(
    case: str, device: torch.device, impls: list[Impl], repeats: int, cost: Cost | None = None,
    machine: Machine | None = None,
) -> list[Record]:
    """Time every implementation alternately (one run of each per round, median of
    `repeats` rounds) so that drifting machine load hits them alike; the peaks come from
    torch's allocator statistics (CUDA) or the child process (CPU, see the module docstring).
    With the case's cost and the machine, the records carry the case's floors."""
    child = device.type == "cpu" and PEAKS_CHILD in os.environ
    if child:
        _return_freed_blocks_to_the_os()
    for impl in impls:  # warm-up: allocator caches, lazy initialisation, kernel loading
        impl.forward()
        impl.forward_backward()
    fwd = {impl.name: [] for impl in impls}
    fwd_bwd = {impl.name: [] for impl in impls}
    for _ in range(0 if child else repeats):
        for impl in impls:
            fwd[impl.name].append(_time_once(impl.forward, device))
        for impl in impls:
            fwd_bwd[impl.name].append(_time_once(impl.forward_backward, device))
    floors = cost.floors_ms(machine) if cost is not None and machine is not None else (None, None)
    records = []
    for impl in impls:
        if device.type == "cpu" and not child:
            peak = _cpu_peaks[(case, impl.name)]
        else:
            peak = peak_mb(impl.forward_backward, device)
        if child:
            _append_peak(case, impl.name, peak)
            records.append(Record(case, impl.name, device_name(device), float("nan"), float("nan"), peak, *floors))
            continue
        records.append(
            Record(case, impl.name, device_name(device), statistics.median(fwd[impl.name]),
                   statistics.median(fwd_bwd[impl.name]), peak, *floors)
        )  # fmt: skip
        print(f"  {case:<28} {impl.name:<10} fwd {records[-1].fwd_ms:9.2f} ms   fwd+bwd {records[-1].fwd_bwd_ms:9.2f} ms   peak {peak:9.1f} MB", flush=True)
    if floors[0] is not None and not child:
        print(f"  {case:<28} floor      fwd {floors[0]:9.2f} ms   fwd+bwd {floors[1]:9.2f} ms", flush=True)
    return records


def _append_peak(case: str, impl: str, peak: float) -> None:
    path = os.environ[PEAKS_CHILD]
    peaks = json.load(open(path)) if os.path.exists(path) else []
    with open(path, "w") as f:
        json.dump([*peaks, [case, impl, peak]], f)


def print_table(records: list[Record], baseline: str = "reference") -> None:
    """Markdown table; speedups and memory ratios are against `baseline` of the same case;
    "x floor" is the forward+backward time over the case's forward+backward floor."""
    base = {(r.case, r.device): r for r in records if r.impl == baseline}
    print("\n| case | device | impl | fwd ms | fwd+bwd ms | peak MB | fwd+bwd speedup | memory ratio | x floor |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    for r in records:
        b = base.get((r.case, r.device))
        speed = f"{b.fwd_bwd_ms / r.fwd_bwd_ms:.1f}x" if b else "-"
        mem = f"{r.peak_mb / b.peak_mb:.3f}" if b and b.peak_mb > 0 else "-"
        floor = f"{r.fwd_bwd_ms / r.floor_fwd_bwd_ms:.1f}" if r.floor_fwd_bwd_ms else "-"
        print(f"| {r.case} | {r.device} | {r.impl} | {r.fwd_ms:.2f} | {r.fwd_bwd_ms:.2f} | {r.peak_mb:.1f} | {speed} | {mem} | {floor} |")


def report_targets(checks: list[tuple[str, bool]], strict: bool) -> None:
    """Print each target as met/missed; with --check, a miss fails the script."""
    print("\nTargets:")
    for text, ok in checks:
        print(f"  [{'met' if ok else 'MISSED'}] {text}")
    if strict and not all(ok for _, ok in checks):
        sys.exit(1)
