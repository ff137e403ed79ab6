"""Shared benchmark machinery: alternating timing, peak memory measured the same way for
every implementation, the results table and the JSON records.

Record keys: case, impl, device, fwd_ms, fwd_bwd_ms, peak_mb (peak of forward+backward
above what was allocated before it, inputs excluded).
"""
from __future__ import annotations

import argparse
import ctypes
import json
import platform
import statistics
import sys
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


@dataclass
class Impl:
    """One implementation of a case: closures that run the forward and forward+backward."""

    name: str
    forward: Callable[[], object]
    forward_backward: Callable[[], object]


def parse_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--device", choices=["cpu", "cuda", "all"], default="all", help="'all': cpu, and cuda when present")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per implementation (median reported)")
    parser.add_argument("--json", metavar="PATH", help="write the records as a JSON list")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    return parser.parse_args()


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


def _rss_mb(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{key} not in /proc/self/status")


def _prepare_cpu_memory_measurement() -> None:
    # A fixed mmap threshold makes glibc return every large block to the OS on free, so a
    # freed tensor of one implementation cannot hide the next one's peak.
    libc = ctypes.CDLL("libc.so.6")
    libc.mallopt(-3, 1 << 16)  # M_MMAP_THRESHOLD = 64 KiB


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


def measure(case: str, device: torch.device, impls: list[Impl], repeats: int) -> list[Record]:
    """Time every implementation alternately (one run of each per round, median of
    `repeats` rounds) so that drifting machine load hits them alike, then measure peaks."""
    if device.type == "cpu":
        _prepare_cpu_memory_measurement()
    for impl in impls:  # warm-up: allocator caches, lazy initialisation, kernel loading
        impl.forward()
        impl.forward_backward()
    fwd = {impl.name: [] for impl in impls}
    fwd_bwd = {impl.name: [] for impl in impls}
    for _ in range(repeats):
        for impl in impls:
            fwd[impl.name].append(_time_once(impl.forward, device))
        for impl in impls:
            fwd_bwd[impl.name].append(_time_once(impl.forward_backward, device))
    records = []
    for impl in impls:
        peak = peak_mb(impl.forward_backward, device)
        records.append(
            Record(case, impl.name, device_name(device), statistics.median(fwd[impl.name]),
                   statistics.median(fwd_bwd[impl.name]), peak)
        )  # fmt: skip
        print(f"  {case:<28} {impl.name:<10} fwd {records[-1].fwd_ms:9.2f} ms   fwd+bwd {records[-1].fwd_bwd_ms:9.2f} ms   peak {peak:9.1f} MB", flush=True)
    return records


def print_table(records: list[Record], baseline: str = "reference") -> None:
    """Markdown table; speedups and memory ratios are against `baseline` of the same case."""
    base = {(r.case, r.device): r for r in records if r.impl == baseline}
    print("\n| case | device | impl | fwd ms | fwd+bwd ms | peak MB | fwd+bwd speedup | memory ratio |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for r in records:
        b = base.get((r.case, r.device))
        speed = f"{b.fwd_bwd_ms / r.fwd_bwd_ms:.1f}x" if b else "-"
        mem = f"{r.peak_mb / b.peak_mb:.3f}" if b and b.peak_mb > 0 else "-"
        print(f"| {r.case} | {r.device} | {r.impl} | {r.fwd_ms:.2f} | {r.fwd_bwd_ms:.2f} | {r.peak_mb:.1f} | {speed} | {mem} |")


def write_json(records: list[Record], path: str | None) -> None:
    if path:
        with open(path, "w") as f:
            json.dump([asdict(r) for r in records], f, indent=2)
        print(f"\nwrote {len(records)} records to {path}")


def copy_bandwidth_gbs(device: torch.device, megabytes: int = 1024) -> float:
    """Achievable memory bandwidth: bytes read + written by a large device-to-device copy."""
    src = torch.empty(megabytes * 2**20, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    ms = statistics.median(_time_once(lambda: dst.copy_(src), device) for _ in range(10))
    return 2 * src.numel() / (ms * 1e-3) / 1e9


def report_targets(checks: list[tuple[str, bool]], strict: bool) -> None:
    """Print each target as met/missed; with --check, a miss fails the script."""
    print("\nTargets:")
    for text, ok in checks:
        print(f"  [{'met' if ok else 'MISSED'}] {text}")
    if strict and not all(ok for _, ok in checks):
        sys.exit(1)
