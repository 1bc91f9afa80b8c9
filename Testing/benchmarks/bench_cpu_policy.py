"""Benchmark `segment`'s window policies on a CPU: wall time, per-organ Dice agreement with the card path.

For every model package given, segments the sample CT resampled to ``--spacing`` mm twice in this one run,
with ``window_policy="card"`` (the model card's window and overlap: the default path) and
``window_policy="large"`` (larger windows, overlap 0.25, from the memory estimate), and reports:

- per organ, the Dice agreement of the "large" label map with the "card" one (the criterion for making
  "large" the CPU default: at least 0.98 for every organ the card path finds);
- per organ, Dice of both against the sample's reference labels (TotalSegmentator output: agreement, not
  accuracy);
- windows, window size, voxel-evaluations and wall / inference seconds of each policy.

Any package works (the script reads only its card); the card's spacing is replaced by ``--spacing``.
Timings are only meaningful on an otherwise idle machine.

    python Testing/benchmarks/bench_cpu_policy.py --out cpu_policy.json
    python Testing/benchmarks/bench_cpu_policy.py --model path/to/package --spacing 1.5 --threads 2
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT.parent / "shared" / "data" / "ct_abdomen"
DEMO = ROOT / "Resources" / "models" / "btcv-hymamba-demo"
POLICIES = ("card", "large")
AGREEMENT_THRESHOLD = 0.98


def run_model(package_path: Path, image, reference, spacing: float, policies) -> dict:
    from mambamim.infer.evaluate import compare_label_maps
    from mambamim.infer.package import LoadedPackage, load_package
    from mambamim.infer.segment import segment_image

    loaded = load_package(package_path)
    spec = dataclasses.replace(loaded.card.input, spacing=(spacing,) * 3)
    card = dataclasses.replace(loaded.card, input=spec)
    package = LoadedPackage(model=loaded.model, card=card, path=loaded.path)
    runs, labels = {}, {}
    for policy in policies:
        def progress(event, policy=policy) -> None:
            if event.message.startswith(("window", "sliding")):
                print(f"  {package_path.name} {policy}: {event.message}", file=sys.stderr, flush=True)

        t = time.perf_counter()
        result = segment_image(image, package, device="cpu", window_policy=policy, progress=progress)
        wall = time.perf_counter() - t
        labels[policy] = result.labels
        runs[policy] = {
            "wall_s": round(wall, 2),
            "inference_s": round(result.timings["inference"], 2),
            "model_grid": list(result.model_shape),
            "windows": result.windows,
            "voxel_evaluations": result.windows["count"] * math.prod(result.windows["roi"]),
            "dice_vs_reference": {
                r["name"]: r["dice"]
                for r in compare_label_maps(result.labels, reference, card.labels_as_dicts(), hd95=False)
            },
        }
        print(f"  {package_path.name} {policy:<5} {wall:8.1f} s  {result.windows}", file=sys.stderr)
    out = {"package": os.path.relpath(package_path, ROOT), "card_version": card.version, "runs": runs}
    if "card" in labels and "large" in labels:
        rows = compare_label_maps(labels["large"], labels["card"], card.labels_as_dicts(), hd95=False)
        found = [r for r in rows if r["ref_voxels"] > 0]  # organs the default (card) path finds
        out["agreement"] = {r["name"]: r["dice"] for r in found}
        out["agreement_min"] = min((r["dice"] for r in found), default=None)
        out["meets_threshold"] = bool(found) and all(r["dice"] >= AGREEMENT_THRESHOLD for r in found)
        out["speedup"] = round(runs["card"]["wall_s"] / max(runs["large"]["wall_s"], 1e-9), 2)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, action="append", default=None, help="package (repeatable)")
    parser.add_argument("--input", type=Path, default=SAMPLE / "ct.nii.gz")
    parser.add_argument("--reference", type=Path, default=SAMPLE / "ct_labels_btcv13.nii.gz")
    parser.add_argument("--spacing", type=float, default=1.5, help="model grid spacing in mm (default 1.5)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--policies", nargs="+", default=list(POLICIES), choices=POLICIES)
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args()

    from mambamim.cpu_memory import use_huge_pages

    use_huge_pages()  # as the `mambamim` command line does, before torch is imported
    import torch
    from mambamim.data.imageio import read_image

    if args.threads:
        torch.set_num_threads(args.threads)
    image = read_image(args.input)
    reference = read_image(args.reference, allow_constant=True)
    results = [
        run_model(path, image, reference, args.spacing, args.policies) for path in (args.model or [DEMO])
    ]
    for r in results:
        print(f"{r['package']}:")
        for policy, run in r["runs"].items():
            w = run["windows"]
            print(
                f"  {policy:<5} roi {w['roi']} overlap {w['overlap']} windows {w['count']:>4}  "
                f"wall {run['wall_s']:.1f} s (inference {run['inference_s']:.1f} s)"
            )
        if "agreement" in r:
            for name, dice in r["agreement"].items():
                print(f"    agreement {name:<24} {dice:.4f}")
            meets = r["meets_threshold"]
            print(f"  min agreement {r['agreement_min']}; meets {AGREEMENT_THRESHOLD}: {meets}")
    if args.out:
        from bench_meta import environment_meta  # beside this script

        meta = {
            **environment_meta(),
            "spacing_mm": args.spacing,
            "input": os.path.relpath(args.input, ROOT),  # no absolute paths of this machine in the JSON
            "threshold": AGREEMENT_THRESHOLD,
        }
        args.out.write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
