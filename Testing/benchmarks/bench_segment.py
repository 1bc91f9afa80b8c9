"""Benchmark `segment`: wall time and peak RSS, HyMamba (default size) vs MONAI SwinUNETR, normal and --fast.

Segments ``../shared/data/ct_abdomen/ct.nii.gz`` at 1.5 mm with ROI 96³ and overlap 0.5 (the paper's
recipe; both networks use the same ROI and overlap), random weights (timing does not depend on them).
Every run is a fresh subprocess, so peak RSS (``ru_maxrss``) belongs to that run alone. Also records
the engine's memory estimate next to the measured peak, which is how ``ACTIVATION_PEAK_FRACTION`` in
``mambamim.infer.memory`` is checked. On a GPU the peak is ``torch.cuda.max_memory_allocated``.

    python Testing/benchmarks/bench_segment.py --out bench_segment.json
    python Testing/benchmarks/bench_segment.py --quick      # 4.5 mm grid: one window per run
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT.parent / "shared" / "data" / "ct_abdomen" / "ct.nii.gz"
LABELS = ROOT.parent / "shared" / "data" / "ct_abdomen" / "labels_btcv13.json"
MODELS = ("hymamba", "swin_unetr")


def build_network(name: str):
    """Default-size network with 14 outputs (BTCV); SwinUNETR straight from MONAI if not registered yet."""
    from mambamim.nn import build_model

    try:
        return build_model(name, in_channels=1, out_channels=14)
    except (ImportError, ValueError) as err:
        if name != "swin_unetr":
            raise
        from monai.networks.nets import SwinUNETR

        print(f"(registry: {err}; using monai.networks.nets.SwinUNETR directly)", file=sys.stderr)
        return SwinUNETR(in_channels=1, out_channels=14, feature_size=48)


def child(spec: dict) -> dict:
    """One run in this (fresh) process: build, segment, write; report times and peaks."""
    import resource

    from mambamim.cpu_memory import use_huge_pages

    use_huge_pages()  # as the `mambamim` command line does, before torch is imported
    import torch
    from mambamim.data.intensity import CT_WINDOW
    from mambamim.infer.package import in_memory_package, make_card
    from mambamim.infer.segment import segment_file

    torch.manual_seed(0)
    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    network = build_network(spec["model"]).eval()
    card = make_card(
        name=f"bench-{spec['model']}",
        labels=json.loads(LABELS.read_text()),
        modality="CT",
        spacing=[spec["spacing"]] * 3,
        intensity=CT_WINDOW,
        roi_size=[96, 96, 96],
        overlap=0.5,
    )
    package = in_memory_package(network, card, spec["model"])
    windows = []

    def progress(event):
        if event.message.startswith("window"):
            windows.append(event.message)

    if spec["device"] == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        result = segment_file(
            spec["input"],
            Path(tmp) / "labels.nii.gz",
            package,
            device=spec["device"],
            fast=spec["fast"],
            progress=progress,
        )
        wall = time.perf_counter() - t
    out = {
        **spec,
        "wall_s": round(wall, 2),
        "inference_s": round(result.timings["inference"], 2),
        "windows": int(windows[-1].split("/")[-1]) if windows else 0,
        "model_grid": list(result.model_shape),
        "params_m": round(sum(p.numel() for p in network.parameters()) / 1e6, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "estimate_mb": {d: round(b / 2**20, 1) for d, b in result.memory_estimate.items()},
        "notes": result.notes,
    }
    if spec["device"] == "cuda":
        out["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, default=SAMPLE)
    parser.add_argument("--spacing", type=float, default=1.5, help="target spacing in mm (default 1.5)")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--modes", nargs="+", default=["normal", "fast"], choices=("normal", "fast"))
    parser.add_argument("--devices", nargs="+", default=None, help="default: cpu, plus cuda when present")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--quick", action="store_true", help="4.5 mm grid (one 96³ window): a smoke run")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0

    import torch

    if not args.input.exists():
        print(f"input {args.input} not found", file=sys.stderr)
        return 1
    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    spacing = 4.5 if args.quick else args.spacing
    results = []
    for device in devices:
        for model in args.models:
            for mode in args.modes:
                spec = {
                    "model": model,
                    "device": device,
                    "fast": mode == "fast",
                    "spacing": spacing,
                    "input": str(args.input),
                    "threads": args.threads,
                }
                proc = subprocess.run(
                    [sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True
                )
                if proc.returncode != 0:
                    print(f"{model} {mode} on {device} failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
                    results.append({**spec, "error": proc.stderr.strip().splitlines()[-1:]})
                    continue
                results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
                r = results[-1]
                print(
                    f"  {model:<10} {mode:<6} {device:<4} {r['wall_s']:>8.1f} s  {r['peak_rss_mb']:>8.0f} MB",
                    file=sys.stderr,
                )

    header = (
        f"{'model':<11} {'mode':<6} {'device':<6} {'grid':<15} {'windows':>7} {'wall s':>8} "
        f"{'infer s':>8} {'peak RSS MB':>11} {'estimate MB':>11}"
    )
    print(header)
    for r in results:
        if "error" in r:
            mode = "fast" if r["fast"] else "normal"
            print(f"{r['model']:<11} {mode:<6} {r['device']:<6} failed: {r['error']}")
            continue
        grid = "x".join(map(str, r["model_grid"]))
        print(
            f"{r['model']:<11} {'fast' if r['fast'] else 'normal':<6} {r['device']:<6} {grid:<15} "
            f"{r['windows']:>7} {r['wall_s']:>8.1f} {r['inference_s']:>8.1f} {r['peak_rss_mb']:>11.0f} "
            f"{r['estimate_mb'].get('cpu', 0):>11.0f}"
        )
    if args.out:
        from bench_meta import environment_meta  # beside this script

        meta = {
            **environment_meta(),
            "spacing_mm": spacing,
            "roi": 96,
            "overlap": 0.5,
            "note": "timings on a shared CPU are noisy",
        }
        args.out.write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
