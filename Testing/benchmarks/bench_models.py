"""Benchmark every segmentation network on one window: forward latency, peak RSS, parameters, GFLOPs.

Each model runs in its own child process (so peak RSS is that model's alone): build with defaults,
one forward under ``torch.utils.flop_counter.FlopCounterMode`` (counts 2 FLOPs per multiply-add of
convolutions, matmuls and the like; element-wise ops and the selective scan are not counted), which
also serves as warm-up, then ``--repeats`` timed forwards in ``torch.inference_mode``, fp32, batch 1.
Latency is reported as min and median wall time, plus the process CPU time of the fastest run.
Workers request huge pages for large tensors before importing torch, as the ``mambamim`` command line
does (:mod:`mambamim.cpu_memory`); ``--no-huge-pages`` measures PyTorch's default allocation instead.

    python Testing/benchmarks/bench_models.py                      # 96³, all models
    python Testing/benchmarks/bench_models.py --quick              # 32³ smoke run
    python Testing/benchmarks/bench_models.py --models hymamba,unetr --repeats 5 --out bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

DEFAULT_MODELS = (
    "hymamba",
    "vanilla_mamba",
    "segmamba",
    "bisegmamba",
    "multisegmamba",
    "segmambaskip",
    "unetr",
    "swin_unetr",
)
SIZED_BY_WINDOW = ("unetr", "swin_unetr", "vanilla_mamba")  # take img_size = the benchmark window


def _worker(name: str, size: int, repeats: int, threads: int | None, huge_pages: bool) -> dict:
    import resource

    from mambamim.cpu_memory import use_huge_pages

    huge_pages = use_huge_pages() if huge_pages else False  # before torch is imported
    import torch
    from mambamim.nn import build_model, model_class
    from torch.utils.flop_counter import FlopCounterMode

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    # Swin UNETR's deepest level is 1/32 and MONAI's InstanceNorm refuses a 1³ map: give it two voxels.
    size = max(size, 2 * model_class(name).size_multiple) if size < 64 else size
    config = {"img_size": size} if name in SIZED_BY_WINDOW else {}
    model = build_model(name, **config).eval()
    params = sum(p.numel() for p in model.parameters())
    x = torch.randn(1, 1, size, size, size)  # every model defaults to in_channels=1
    with torch.inference_mode():
        with FlopCounterMode(display=False) as counter:
            model(x)
        walls, cpus = [], []
        for _ in range(repeats):
            c0, t0 = time.process_time(), time.perf_counter()
            model(x)
            walls.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
    best = min(range(repeats), key=walls.__getitem__)
    return {
        "model": name,
        "window": [size] * 3,
        "params": params,
        "gflops": counter.get_total_flops() / 1e9,
        "latency_min_s": walls[best],
        "latency_median_s": sorted(walls)[len(walls) // 2],
        "cpu_s_of_min": cpus[best],
        "latencies_s": walls,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "threads": torch.get_num_threads(),
        "huge_pages": huge_pages,
        "torch": torch.__version__,
    }


def _run_child(
    name: str, size: int, repeats: int, threads: int | None, huge_pages: bool, timeout: float
) -> dict:
    cmd = [sys.executable, __file__, "--worker", name, "--size", str(size), "--repeats", str(repeats)]
    if threads:
        cmd += ["--threads", str(threads)]
    if not huge_pages:
        cmd.append("--no-huge-pages")
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}  # the flag decides
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"model": name, "error": f"timed out after {timeout:.0f} s"}
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"model": name, "error": last}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _table(rows: list[dict]) -> str:
    head = (
        f"{'model':<15}{'window':>7}{'params (M)':>11}{'GFLOPs':>10}{'min (s)':>9}{'median (s)':>11}"
        f"{'CPU (s)':>9}{'RSS (MB)':>10}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['model']:<15}  skipped: {r['error']}")
            continue
        lines.append(
            f"{r['model']:<15}{r['window'][0]:>7}{r['params'] / 1e6:>11.2f}{r['gflops']:>10.1f}"
            f"{r['latency_min_s']:>9.2f}{r['latency_median_s']:>11.2f}{r['cpu_s_of_min']:>9.2f}{r['peak_rss_mb']:>10.0f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated registry names")
    parser.add_argument("--size", type=int, default=96, help="cubic window edge (default 96)")
    parser.add_argument("--repeats", type=int, default=3, help="timed forwards per model (default 3)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per model before giving up")
    parser.add_argument(
        "--quick", action="store_true", help="32³ window (64³ for Swin UNETR), one timed forward"
    )
    parser.add_argument(
        "--no-huge-pages", action="store_true", help="PyTorch's default allocation (no THP_MEM_ALLOC_ENABLE)"
    )
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")

    if args.worker:
        print(json.dumps(_worker(args.worker, args.size, args.repeats, args.threads, not args.no_huge_pages)))
        return 0

    from mambamim.nn import MODELS

    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        parser.error(f"--models: unknown {', '.join(unknown)}; valid: {', '.join(sorted(MODELS))}")
    size, repeats = (32, 1) if args.quick else (args.size, args.repeats)
    rows = []
    for name in names:
        print(f"[bench_models] {name} at {size}³ ...", file=sys.stderr, flush=True)
        rows.append(_run_child(name, size, repeats, args.threads, not args.no_huge_pages, args.timeout))
    pages = "off" if args.no_huge_pages else "on, as the CLI"
    print(f"forward, fp32, batch 1, {size}³ window (unless listed), torch.inference_mode, CPU threads: "
          f"{args.threads or 'default'}, {os.cpu_count()} cores, huge pages {pages}; "
          "GFLOPs by FlopCounterMode")  # fmt: skip
    print(_table(rows))
    if args.out:
        tmp = f"{args.out}.tmp"
        with open(tmp, "w") as f:
            summary = {"window": size, "repeats": repeats, "huge_pages": not args.no_huge_pages}
            json.dump({**summary, "results": rows}, f, indent=2)
        os.replace(tmp, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
