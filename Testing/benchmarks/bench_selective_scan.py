"""Selective scan on CPU: our chunked PyTorch scan vs the algorithm of mamba-ssm's ``selective_scan_ref``.

Measures forward (inference, ``torch.no_grad``) and forward+backward (all inputs require grad) wall time
and peak memory, float32, d_state 16, with D, z, delta_bias and softplus as the Mamba block calls it.

Memory: every (implementation, shape, mode) runs in a fresh subprocess. Just before the timed runs
(inputs allocated, one warm-up call on a short sequence done) the kernel's peak-RSS counter is reset
(``/proc/self/clear_refs``); peak = ``VmHWM`` after the runs minus the RSS at the reset, so imports and
inputs are excluded. Runs that exceed ``--timeout`` are reported as such (the reference's backward is
quadratic in L). ``--threads`` sets torch's intra-op threads in the subprocesses.

    python Testing/benchmarks/bench_selective_scan.py --out scan.json
    python Testing/benchmarks/bench_selective_scan.py --quick
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

SHAPES = ((2, 768, 216), (1, 768, 1728), (1, 768, 4096))
QUICK_SHAPES = ((2, 96, 64), (1, 96, 256))
D_STATE = 16


def selective_scan_ref(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """The algorithm of mamba-ssm's ``selective_scan_ref``: precompute exp(delta A) and delta B u for
    the whole sequence as (b, d, L, n), then a Python loop over time steps; autograd through it."""
    import torch
    import torch.nn.functional as F

    u, delta = u.float(), delta.float()
    if delta_bias is not None:
        delta = delta + delta_bias[..., None].float()
    if delta_softplus:
        delta = F.softplus(delta)
    b, d, n = u.shape[0], A.shape[0], A.shape[1]
    delta_A = torch.exp(torch.einsum("bdl,dn->bdln", delta, A))
    delta_B_u = torch.einsum("bdl,bnl,bdl->bdln", delta, B.float(), u)
    x = A.new_zeros((b, d, n))
    ys = []
    for i in range(u.shape[2]):
        x = delta_A[:, :, i] * x + delta_B_u[:, :, i]
        ys.append(torch.einsum("bdn,bn->bd", x, C[:, :, i].float()))
    y = torch.stack(ys, dim=2)
    out = y if D is None else y + u * D[:, None]
    if z is not None:
        out = out * F.silu(z)
    return out


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak_rss() -> int:
    """Reset the peak-RSS counter (Linux >= 4.0) and return the current RSS in bytes."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status_kb("VmRSS") * 1024


def run_case(impl: str, b: int, d: int, L: int, mode: str, repeats: int, threads: int) -> dict:
    """One measurement in this process (called in a fresh subprocess)."""
    import torch
    from mambamim.ops import selective_scan_torch

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    grad = mode == "fwd+bwd"
    fn = selective_scan_torch if impl == "ours" else selective_scan_ref

    def make_inputs(length: int) -> dict:
        inputs = {
            "u": torch.randn(b, d, length),
            "delta": torch.randn(b, d, length) * 0.5,
            "A": -torch.arange(1.0, D_STATE + 1).repeat(d, 1),
            "B": torch.randn(b, D_STATE, length),
            "C": torch.randn(b, D_STATE, length),
            "D": torch.ones(d),
            "z": torch.randn(b, d, length),
            "delta_bias": torch.full((d,), -4.0),
        }
        return {k: v.requires_grad_(grad) for k, v in inputs.items()}

    def once(inputs: dict) -> None:
        with torch.set_grad_enabled(grad):
            out = fn(**inputs, delta_softplus=True)
            if grad:
                out.square().mean().backward()

    once(make_inputs(min(L, 8)))  # warm-up on a short sequence: one-off initialisation, not timed
    inputs = make_inputs(L)
    rss_before = _reset_peak_rss()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        once(inputs)
        times.append(time.perf_counter() - start)
    peak = _status_kb("VmHWM") * 1024 - rss_before
    return {"time_s": sorted(times)[len(times) // 2], "peak_mb": max(peak, 0) / 2**20}


def measure(
    impl: str, shape: tuple[int, int, int], mode: str, repeats: int, args: argparse.Namespace
) -> dict:
    record = {"impl": impl, "b": shape[0], "d": shape[1], "L": shape[2], "d_state": D_STATE, "mode": mode}
    cmd = [sys.executable, __file__, "--case", json.dumps([impl, *shape, mode, repeats, args.threads])]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, check=False)
    except subprocess.TimeoutExpired:
        return {**record, "status": f"timeout > {args.timeout:.0f} s", "time_s": None, "peak_mb": None}
    if proc.returncode != 0:
        reason = proc.stderr.strip().splitlines()[-1]
        return {**record, "status": f"failed: {reason}", "time_s": None, "peak_mb": None}
    return {**record, "status": "ok", **json.loads(proc.stdout.strip().splitlines()[-1])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--quick", action="store_true", help="tiny shapes, one repeat: a smoke run")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per case (median reported)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per case before giving up")
    parser.add_argument("--threads", type=int, default=0, help="torch threads per run (0: torch's default)")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one case in this process
    args = parser.parse_args()
    if args.case:
        print(json.dumps(run_case(*json.loads(args.case))))
        return 0

    import torch

    threads = args.threads or torch.get_num_threads()
    shapes = QUICK_SHAPES if args.quick else SHAPES
    repeats = 1 if args.quick else args.repeats
    results = []
    print(f"selective scan, float32, d_state {D_STATE}, torch {torch.__version__}, {threads} threads")
    header = f"{'impl':<5} {'(b, d, L)':<17} {'mode':<8} {'time s':>9} {'peak MB':>9}  status"
    print(header)
    print("-" * len(header))
    for shape in shapes:
        for mode in ("fwd", "fwd+bwd"):
            for impl in ("ours", "ref"):
                # the reference's backward is quadratic in L: one repeat is plenty
                reps = 1 if impl == "ref" and mode == "fwd+bwd" else repeats
                r = measure(impl, shape, mode, reps, args)
                results.append(r)
                time_s = f"{r['time_s']:.4f}" if r["time_s"] is not None else "-"
                peak = f"{r['peak_mb']:.1f}" if r["peak_mb"] is not None else "-"
                print(f"{impl:<5} {shape!s:<17} {mode:<8} {time_s:>9} {peak:>9}  {r['status']}", flush=True)
    print("\nspeed-up of ours over the reference:")
    for shape in shapes:
        for mode in ("fwd", "fwd+bwd"):
            rows = [r for r in results if (r["b"], r["d"], r["L"]) == shape and r["mode"] == mode]
            pick = {r["impl"]: r["time_s"] for r in rows}
            if pick.get("ours") and pick.get("ref"):
                print(f"  {shape!s:<17} {mode:<8} {pick['ref'] / pick['ours']:.1f}x")
            elif pick.get("ours"):
                print(f"  {shape!s:<17} {mode:<8} reference did not finish")
    if args.out:
        payload = {
            "benchmark": "selective_scan",
            "torch": torch.__version__,
            "threads": threads,
            "memory_method": "per-case subprocess: VmHWM after the runs - VmRSS at a clear_refs reset",
            "forward_mode": "torch.no_grad; fwd+bwd: all inputs require grad, loss = mean(out^2)",
            "results": results,
        }
        tmp = args.out.with_suffix(args.out.suffix + ".tmp")
        tmp.write_text(json.dumps(payload, indent=2))
        tmp.replace(args.out)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
