"""Benchmark `segment`'s CPU settings: window batch x torch threads, on a quiet and on a busy machine.

Segments the sample CT with a model package (default: the demo) on the CPU for every combination of
``--batches`` and ``--threads``, ``--repeats`` times each, and reports the median wall time and the
inference time, plus each setting's slowdown against the best one of its condition. The defaults in
``mambamim.infer.defaults`` are chosen as those never far from the best in either condition.

Conditions: ``--load N`` starts N busy-looping processes for the measurement (a reproducible stand-in
for a machine shared with other work); a comma-separated list (``--load 0,4``) measures each. Run it
on an otherwise idle machine for the "quiet" figures; a machine already shared with other jobs gives
"busy" figures even at ``--load 0`` (the JSON records the load average before each condition).

    python Testing/benchmarks/bench_cpu_defaults.py --out cpu_defaults.json
    python Testing/benchmarks/bench_cpu_defaults.py --load 0,4 --batches 1 2 4 8 --threads 1 2 4 --repeats 3
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT.parent / "shared" / "data" / "ct_abdomen" / "ct.nii.gz"
DEMO = ROOT / "Resources" / "models" / "btcv-hymamba-demo"


def _burn(stop) -> None:  # a busy loop standing in for another user's work
    while not stop.is_set():
        sum(i * i for i in range(10_000))


class Load:
    """``count`` busy processes while the block runs."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.stop = multiprocessing.Event()
        self.workers: list = []

    def __enter__(self) -> Load:
        for _ in range(self.count):
            worker = multiprocessing.Process(target=_burn, args=(self.stop,), daemon=True)
            worker.start()
            self.workers.append(worker)
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for worker in self.workers:
            worker.join(timeout=5)
            if worker.is_alive():
                worker.terminate()


def run_once(package, image, batch: int, threads: int) -> tuple[float, float, int]:
    """(wall s, inference s, threads used) of one CPU segmentation with ``batch`` windows and ``threads``
    (0: the engine's automatic choice, :func:`mambamim.infer.defaults.auto_threads`)."""
    import torch
    from mambamim.infer.defaults import auto_threads
    from mambamim.infer.segment import segment_image

    t = time.perf_counter()
    used = threads or auto_threads()  # the automatic choice is part of the timed run, as in `segment`
    torch.set_num_threads(used)
    result = segment_image(image, package, device="cpu", sw_batch_size=batch, window_policy="card", tta=False)
    return time.perf_counter() - t, result.timings["inference"], used


def measure_condition(package, image, settings: list[tuple[int, int]], repeats: int, load: int) -> list[dict]:
    """Every setting ``repeats`` times, round-robin, so that drifting load hits all settings alike."""
    walls: dict = {s: [] for s in settings}
    inference: dict = {s: [] for s in settings}
    used: dict = {s: [] for s in settings}
    for _ in range(repeats):
        for threads, batch in settings:
            wall, infer_s, n = run_once(package, image, batch, threads)
            used[(threads, batch)].append(n)
            walls[(threads, batch)].append(wall)
            inference[(threads, batch)].append(infer_s)
            print(f"load {load} threads {threads} batch {batch}: {wall:.1f} s", file=sys.stderr, flush=True)
    return [
        {
            "threads": threads,
            "batch": batch,
            "wall_s": [round(w, 2) for w in walls[(threads, batch)]],
            "median_wall_s": round(statistics.median(walls[(threads, batch)]), 2),
            "median_inference_s": round(statistics.median(inference[(threads, batch)]), 2),
            "threads_used": used[(threads, batch)],
        }
        for threads, batch in settings
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEMO, help="model package (default: the demo)")
    parser.add_argument("--input", type=Path, default=SAMPLE)
    parser.add_argument("--spacing", type=float, default=None, help="replace the card's spacing (mm)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--threads", type=int, nargs="+", default=None,
                        help="torch thread counts; 0 = the engine's automatic choice "
                        "(default: 1, the machine's cores and 0)")  # fmt: skip
    parser.add_argument("--repeats", type=int, default=1, help="runs per setting (median reported)")
    parser.add_argument("--load", default="0", help="busy processes during the run; a list measures each")
    parser.add_argument("--label", default="", help="free text stored in the JSON (e.g. 'quiet', 'busy')")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args()

    from mambamim.cpu_memory import use_huge_pages

    use_huge_pages()  # as the `mambamim` command line does, before torch is imported
    import torch
    from mambamim.data.imageio import read_image
    from mambamim.infer.package import LoadedPackage, load_package

    cores = os.cpu_count() or 1
    threads = args.threads or [*sorted({1, torch.get_num_threads()}), 0]
    loaded = load_package(args.model)
    card = loaded.card
    if args.spacing:  # the card is frozen: a copy with another spacing
        card = dataclasses.replace(card, input=dataclasses.replace(card.input, spacing=(args.spacing,) * 3))
    package = LoadedPackage(model=loaded.model, card=card, path=loaded.path)
    image = read_image(args.input)
    conditions = []
    for load in [int(v) for v in args.load.split(",")]:
        load_average = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        with Load(load):
            settings = [(n, batch) for n in threads for batch in args.batches]
            rows = measure_condition(package, image, settings, args.repeats, load)
        best = min(r["median_wall_s"] for r in rows)
        for r in rows:
            r["slowdown_vs_best"] = round(r["median_wall_s"] / best, 2)
        conditions.append({"load_processes": load, "load_average_before": load_average, "runs": rows})

    for condition in conditions:
        print(
            f"load {condition['load_processes']} (load average before: {condition['load_average_before']}):"
        )
        for r in condition["runs"]:
            print(f"  threads {r['threads']:>2} batch {r['batch']:>2}  {r['median_wall_s']:7.1f} s  "
                  f"x{r['slowdown_vs_best']:.2f} of best")  # fmt: skip
    # The setting whose worst slowdown over all conditions is smallest: "never far from the best".
    keys = {(r["threads"], r["batch"]) for c in conditions for r in c["runs"]}
    worst = {
        key: max(
            r["slowdown_vs_best"] for c in conditions for r in c["runs"] if (r["threads"], r["batch"]) == key
        )
        for key in keys
    }
    robust = min(worst, key=lambda key: (worst[key], key[1]))
    print(f"most robust: threads {robust[0]} batch {robust[1]} (at most x{worst[robust]:.2f} of the best)")
    if args.out:
        from bench_meta import environment_meta  # beside this script

        meta = {
            **environment_meta(),
            "cpu_count": cores,
            "package": os.path.relpath(args.model, ROOT),
            "input": os.path.relpath(args.input, ROOT),  # no absolute paths of this machine in the JSON
            "spacing_mm": list(card.input.spacing),
            "label": args.label,
        }
        summary = {"robust": {"threads": robust[0], "batch": robust[1], "worst_slowdown": worst[robust]}}
        args.out.write_text(json.dumps({"meta": meta, "conditions": conditions, **summary}, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
