"""One-command GPU check: is everything CUDA correct, and how fast is it? JSON report + readable summary.

Run through ``Testing/gpu/check.sh`` (``make gpu-check``), which makes the wheels prepared by
``make gpu-wheels`` importable without a network. Sections, each recorded as ok / failed / skipped with
its figures, the report rewritten after every section so a run cut short still leaves one:

- ``environment``: versions, GPU, which scan backend runs where (``mambamim info``'s report);
- ``scan_parity``: the PyTorch scan, the Triton scan and (if importable) mamba-ssm on the GPU against
  the float64 step-by-step reference, forward and every gradient; and a Taming-length sequence
  (2^18 tokens) through the chunked kernels against the float64 PyTorch scan;
- ``model_parity``: HyMamba and SegMamba (Taming Mambas) fp32 on the GPU (each scan backend, TF32 off)
  against the same weights on the CPU;
- ``bf16``: one MambaMIM pre-training step and one HyMamba fine-tuning step under bf16 autocast;
- ``timings``: HyMamba and SwinUNETR (the baseline) 96³ windows at batch 1/2/4/8, fp32 and bf16; the
  scan backends at the benchmark shapes; MambaMIM pre-training steps at batch 2/4/8; whole-scan
  segmentation of the sample CT at 1.5 mm, normal and ``--fast`` (CUDA events or synchronised wall
  clock, warm-up excluded, median of ``--repeats``);
- ``oom_fallback``: a window batch far too large for the GPU, so the sliding window's out-of-memory
  fallback runs for real and the run still finishes;
- ``ddp``: one DDP step with NCCL in two processes on one GPU, or one process if NCCL refuses.

``--reduced`` runs every section's code on the CPU at toy sizes (32³ windows, short sequences; the
out-of-memory error is raised by a stand-in network; DDP over gloo): CI runs it so the script cannot
rot. Random weights everywhere: timings do not depend on them.

    python Testing/gpu/check.py --out $GPU_CHECK_DIR
    python Testing/gpu/check.py --reduced --out /tmp/gpu-check
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "Training"), str(ROOT / "Testing")]
SAMPLE = ROOT.parent / "shared" / "data" / "ct_abdomen" / "ct.nii.gz"
PREPARED = ROOT / ".whl"  # `make gpu-wheels`: wheels/ and sample/ (git-ignored, carried to the GPU machine)
PREPARED_SAMPLE = PREPARED / "sample" / "ct.nii.gz"
SCAN_SHAPES = ((2, 768, 216), (1, 768, 1728), (1, 768, 4096), (1, 96, 1 << 18))
FORWARD_TOLERANCE = 2e-3  # fp32 result vs float64 reference, relative to the reference's largest value
GRADIENT_TOLERANCE = 1e-2
MODEL_TOLERANCE = 1e-3
# --reduced window sizes: SwinUNETR's instance norms need at least 2³ voxels at its 1/32 bottleneck
REDUCED_WINDOW = {"hymamba": 32, "swin_unetr": 64}


class Report:
    """Sections in order, written as report.json and summary.txt after each one."""

    def __init__(self, out: Path, reduced: bool, budget_s: float) -> None:
        self.out, self.reduced, self.budget_s = out, reduced, budget_s
        self.start = time.perf_counter()
        self.sections: dict[str, dict[str, Any]] = {}
        out.mkdir(parents=True, exist_ok=True)

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def over_budget(self) -> bool:
        return self.elapsed() > self.budget_s

    def run(self, name: str, fn: Callable[[dict[str, Any]], None]) -> None:
        record: dict[str, Any] = {"status": "ok"}
        t = time.perf_counter()
        print(f"[{self.elapsed():6.1f} s] {name} ...", flush=True)
        try:
            fn(record)
        except Skip as reason:
            record.update(status="skipped", reason=str(reason))
        except Exception as error:  # one broken section must not hide the others
            record.update(status="failed", error=f"{type(error).__name__}: {error}")
            record["traceback"] = traceback.format_exc(limit=8)
        if record["status"] == "ok" and record.get("failures"):
            record["status"] = "failed"
        record["seconds"] = round(time.perf_counter() - t, 1)
        self.sections[name] = record
        print(f"[{self.elapsed():6.1f} s] {name}: {record['status']}", flush=True)
        self.write()

    def write(self) -> None:
        report = {
            "reduced": self.reduced,
            "seconds": round(self.elapsed(), 1),
            "passed": all(s["status"] != "failed" for s in self.sections.values()),
            "sections": self.sections,
        }
        (self.out / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
        (self.out / "summary.txt").write_text(summary(report) + "\n")


class Skip(Exception):
    """A section that cannot run here (says why)."""


def summary(report: dict[str, Any]) -> str:
    """The readable summary: one line per section, then its failures and key figures."""
    lines = [
        f"GPU check ({'reduced, CPU' if report['reduced'] else 'full'}): "
        f"{'PASSED' if report['passed'] else 'FAILED'} in {report['seconds']} s"
    ]
    for name, s in report["sections"].items():
        detail = s.get("reason") or s.get("error") or ""
        lines.append(f"{name:<14} {s['status']:<8} {s['seconds']:>6} s  {detail}".rstrip())
        for failure in s.get("failures", []):
            lines.append(f"    FAIL {failure}")
        for line in s.get("summary", []):
            lines.append(f"    {line}")
    return "\n".join(lines)


# ---------------------------------------------------------------- helpers


def use_prepared_wheels() -> list[str]:
    """Make the wheels of ``make gpu-wheels`` importable without a network or pip: each one whose
    module is missing here is unpacked into ``.whl/site``, appended to ``sys.path`` (installed packages
    win). Returns the distributions unpacked."""
    import importlib.util
    import zipfile

    site = PREPARED / "site"
    unpacked = []
    for wheel in sorted((PREPARED / "wheels").glob("*.whl")):
        with zipfile.ZipFile(wheel) as archive:
            names = archive.namelist()
            top_level = next((n for n in names if n.endswith(".dist-info/top_level.txt")), None)
            if top_level is not None:
                modules = archive.read(top_level).decode().split()
            else:
                modules = sorted({n.split("/")[0] for n in names if ".dist-info" not in n.split("/")[0]})
            modules = [m.removesuffix(".py") for m in modules if not m.startswith("_")] or modules
            if all(importlib.util.find_spec(m) is not None for m in modules):
                continue
            if not all((site / m).exists() or (site / f"{m}.py").exists() for m in modules):
                archive.extractall(site)
            unpacked.append(wheel.name.split("-")[0])
    if site.is_dir():
        sys.path.append(str(site))
    return unpacked


def device_and_sync(reduced: bool):
    import torch

    if reduced:
        return torch.device("cpu"), (lambda: None)
    if not torch.cuda.is_available():
        raise Skip("no CUDA device (use --reduced for the CPU form)")
    return torch.device("cuda"), torch.cuda.synchronize


def timed(fn: Callable[[], Any], repeats: int, device) -> float:
    """Median seconds of ``repeats`` calls after one warm-up call: CUDA events on a GPU."""
    import torch

    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1000.0)
        else:
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def relative_error(got, want) -> float:
    want64 = want.detach().double().cpu()
    scale = max(float(want64.abs().max()), 1e-12)
    return float((got.detach().double().cpu() - want64).abs().max()) / scale


def scan_backends(device) -> dict[str, str]:
    """backend name -> why it runs or not, for the selective scan on ``device``."""
    from mambamim.ops.backends import cuda_kernel, triton_interpreter, triton_scan

    usable = {"torch": "pure PyTorch"}
    fn, reason = triton_scan()
    if fn is not None and (device.type == "cuda" or triton_interpreter()):
        usable["triton"] = reason
    kernel, reason = cuda_kernel("selective_scan")
    if kernel is not None and device.type == "cuda":
        usable["cuda"] = reason
    return usable


def build(name: str):
    from mambamim.nn import build_model

    return build_model(name, in_channels=1, out_channels=14)


# ---------------------------------------------------------------- sections


def environment(record: dict[str, Any], args, unpacked: list[str]) -> None:
    import torch
    from mambamim.ops import backend_report

    record["prepared_wheels_used"] = unpacked
    record["python"] = platform.python_version()
    record["torch"] = torch.__version__
    record["cuda_build"] = torch.version.cuda
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        record["gpu"] = f"{props.name}, {props.total_memory / 2**30:.0f} GiB, sm_{props.major}{props.minor}"
    for package in ("triton", "mamba_ssm", "causal_conv1d", "monai", "SimpleITK"):
        try:
            module = __import__(package)
            record[package] = getattr(module, "__version__", "importable")
        except Exception as error:
            record[package] = f"not importable ({type(error).__name__})"
    record["backends"] = backend_report()
    record["summary"] = [
        f"torch {record['torch']} (CUDA {record['cuda_build']}), {record.get('gpu', 'no GPU')}",
        f"selective scan on CUDA: {record['backends']['selective_scan']['on_cuda']}; "
        f"triton {record['triton']}; mamba-ssm {record['mamba_ssm']}",
    ]


def scan_parity(record: dict[str, Any], args) -> None:
    import torch
    from mambamim.ops import selective_scan_fn, selective_scan_torch
    from scan_reference import make_inputs, reference_scan

    device, _ = device_and_sync(args.reduced)
    backends = scan_backends(device)
    record["backends"] = backends
    cases = [(1, 4, 20, 3, 0, 0)] if args.reduced else [(2, 64, 300, 16, 0, 0), (2, 64, 257, 16, 4, 4)]
    record["cases"], record["failures"] = [], []
    names = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")
    for b, d, L, n, groups_B, groups_C in cases:
        torch.manual_seed(0)
        inputs = make_inputs(b, d, L, n, groups_B, groups_C, delta_max=1.0, requires_grad=True)
        inputs["delta"] = (inputs["delta"] - 2.0).detach().requires_grad_()  # softplus(-2..-1) like Mamba
        ref_out, ref_last = reference_scan(*(inputs[k] for k in names), delta_softplus=True)
        weight = torch.randn_like(ref_out)
        ref_grads = torch.autograd.grad((ref_out * weight).sum(), [inputs[k] for k in names])
        for backend in backends:
            leaves = {k: v.detach().float().to(device).requires_grad_() for k, v in inputs.items()}
            out, last = selective_scan_fn(
                *(leaves[k] for k in names), delta_softplus=True, return_last_state=True, backend=backend
            )
            grads = torch.autograd.grad((out * weight.float().to(device)).sum(), [leaves[k] for k in names])
            row = {
                "shape": [b, d, L, n],
                "groups": groups_B,
                "backend": backend,
                "forward": relative_error(out, ref_out),
                "last_state": relative_error(last, ref_last),
                "gradients": {k: relative_error(g, r) for k, g, r in zip(names, grads, ref_grads)},
            }
            record["cases"].append(row)
            worst = max(row["gradients"].values())
            if max(row["forward"], row["last_state"]) > FORWARD_TOLERANCE or worst > GRADIENT_TOLERANCE:
                record["failures"].append(
                    f"{backend} {row['shape']}: forward {row['forward']:.2e}, gradient {worst:.2e}"
                )
    # A Taming-length sequence: chunks over L with the state carried between them.
    L = 300 if args.reduced else 1 << 18
    torch.manual_seed(1)
    inputs = make_inputs(1, 8, L, 16, delta_max=1.0, dtype=torch.float64, requires_grad=False)
    inputs = {k: v.to(device) for k, v in inputs.items()}
    inputs["delta"] = inputs["delta"] - 2.0
    core = [inputs[k] for k in names[:5]]
    want, want_last = selective_scan_torch(*core, D=inputs["D"], delta_softplus=True, return_last_state=True)
    record["long"] = {"L": L}
    for backend in backends:
        out, last = selective_scan_fn(
            *(t.float() for t in core), D=inputs["D"].float(), delta_softplus=True,
            return_last_state=True, backend=backend,
        )  # fmt: skip
        err = max(relative_error(out, want), relative_error(last, want_last))
        record["long"][backend] = err
        if err > FORWARD_TOLERANCE:
            record["failures"].append(f"{backend} L={L}: forward {err:.2e}")
    record["summary"] = [
        f"{r['backend']:<6} {r['shape']} groups {r['groups']}: forward {r['forward']:.1e}, "
        f"worst gradient {max(r['gradients'].values()):.1e}"
        for r in record["cases"]
    ] + [f"L={L}: " + ", ".join(f"{k} {v:.1e}" for k, v in record["long"].items() if k != "L")]


def model_parity(record: dict[str, Any], args) -> None:
    import torch

    device, _ = device_and_sync(args.reduced)
    size = 32 if args.reduced else 64
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    record["failures"], record["summary"] = [], []
    for name in ("hymamba", "segmamba"):
        torch.manual_seed(0)
        network = build(name).eval()
        x = torch.randn(1, 1, size, size, size)
        with torch.inference_mode():
            want = network(x)
        network.to(device)
        for backend in scan_backends(device):
            os.environ["MAMBAMIM_SCAN_BACKEND"] = backend
            try:
                with torch.inference_mode():
                    got = network(x.to(device))
            finally:
                os.environ.pop("MAMBAMIM_SCAN_BACKEND", None)
            err = relative_error(got, want)
            record[f"{name}/{backend}"] = err
            record["summary"].append(f"{name} {size}³ {device.type}/{backend} vs CPU: {err:.1e}")
            if err > MODEL_TOLERANCE:
                record["failures"].append(f"{name} {backend}: {err:.2e}")
        network.cpu()
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True


def bf16_steps(record: dict[str, Any], args) -> None:
    import torch
    from mambamim.engine.finetune import supervision_loss
    from mambamim.mim.model import MambaMIM
    from monai.losses import DiceCELoss

    device, _ = device_and_sync(args.reduced)
    size, batch = (32, 1) if args.reduced else (96, 2)
    record["failures"] = []

    def step(model, loss_of) -> tuple[float, bool]:
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = loss_of()
        loss.backward()
        finite = all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        optimizer.step()
        return float(loss.detach()), bool(finite)

    torch.manual_seed(0)
    mim = MambaMIM().to(device).train()
    x = torch.rand(batch, 1, size, size, size, device=device)
    generator = torch.Generator().manual_seed(0)
    loss, finite = step(mim, lambda: mim(x, generator=generator).loss)
    record["pretrain"] = {"loss": loss, "gradients_finite": finite, "batch": batch, "crop": size}
    network = build("hymamba").to(device).train()
    label = torch.randint(0, 14, (batch, 1, size, size, size), device=device)
    dice_ce = DiceCELoss(to_onehot_y=True, softmax=True)
    loss2, finite2 = step(network, lambda: supervision_loss(dice_ce, network(x), label))
    record["finetune"] = {"loss": loss2, "gradients_finite": finite2, "batch": batch, "crop": size}
    for what, (value, ok) in (("pretrain", (loss, finite)), ("finetune", (loss2, finite2))):
        if not (ok and torch.isfinite(torch.tensor(value))):
            record["failures"].append(f"{what}: loss {value}, gradients finite {ok}")
    record["summary"] = [f"pre-training loss {loss:.4f}, fine-tuning loss {loss2:.4f} (bf16, batch {batch})"]


def timings(record: dict[str, Any], args, report: Report) -> None:
    import torch

    device, sync = device_and_sync(args.reduced)
    repeats = 1 if args.reduced else args.repeats
    size = 32 if args.reduced else 96
    batches = (1,) if args.reduced else (1, 2, 4, 8)
    record["summary"] = []
    # windows: HyMamba and the SwinUNETR baseline
    record["windows"] = []
    for name in ("hymamba", "swin_unetr"):
        network = build(name).to(device).eval()
        window = REDUCED_WINDOW[name] if args.reduced else size
        for dtype in ("fp32", "bf16"):
            for batch in batches:
                if report.over_budget():
                    raise Skip(f"time budget of {report.budget_s} s spent")
                x = torch.randn(batch, 1, window, window, window, device=device)

                def forward(network=network, x=x, dtype=dtype):
                    with torch.inference_mode(), torch.autocast(
                        device.type, dtype=torch.bfloat16, enabled=dtype == "bf16"
                    ):
                        network(x)

                seconds = timed(forward, repeats, device)
                row = {"model": name, "dtype": dtype, "batch": batch, "size": window, "seconds": seconds,
                       "windows_per_s": batch / seconds}  # fmt: skip
                record["windows"].append(row)
                record["summary"].append(
                    f"{name:<10} {window}³ {dtype} batch {batch}: {seconds * 1000:8.1f} ms "
                    f"({batch / seconds:6.2f} windows/s)"
                )
        del network
    # scan backends at the benchmark shapes, forward (inference) and forward + backward
    from mambamim.ops import selective_scan_fn
    from scan_reference import make_inputs

    record["scans"] = []
    shapes = ((1, 16, 64),) if args.reduced else SCAN_SHAPES
    for b, d, L in shapes:
        inputs = make_inputs(b, d, L, 16, delta_max=1.0, dtype=torch.float32, requires_grad=False)
        inputs = {k: v.to(device) for k, v in inputs.items()}
        for backend in scan_backends(device):
            if report.over_budget():
                raise Skip(f"time budget of {report.budget_s} s spent")
            if backend == "torch" and L > 1 << 16 and device.type == "cuda":
                continue  # one kernel launch per step: seconds per call, and not what a GPU user runs
            leaves = {k: v.clone().requires_grad_() for k, v in inputs.items()}

            def forward(leaves=leaves, backend=backend):
                with torch.no_grad():
                    selective_scan_fn(**leaves, delta_softplus=True, backend=backend)

            def train(leaves=leaves, backend=backend):
                selective_scan_fn(**leaves, delta_softplus=True, backend=backend).sum().backward()

            row = {"shape": [b, d, L], "backend": backend, "forward_s": timed(forward, repeats, device),
                   "forward_backward_s": timed(train, repeats, device)}  # fmt: skip
            record["scans"].append(row)
            record["summary"].append(
                f"scan {backend:<6} {b}x{d}x{L}: forward {row['forward_s'] * 1000:8.2f} ms, "
                f"fwd+bwd {row['forward_backward_s'] * 1000:8.2f} ms"
            )
    record["pretrain"] = pretrain_timings(device, size, (1,) if args.reduced else (2, 4, 8), repeats, report)
    for row in record["pretrain"]:
        ms = row["seconds"] * 1000
        record["summary"].append(f"pre-training step {size}³ batch {row['batch']}: {ms:8.1f} ms")
    # whole-scan segmentation of the sample CT at 1.5 mm
    record["segment"] = whole_scan(device, sync, args, report)
    for row in record["segment"]:
        record["summary"].append(
            f"segment {row['model']:<10} {row['mode']:<6} grid {row['grid']}: {row['wall_s']:.2f} s "
            f"({row['windows']} windows)"
        )


def pretrain_timings(device, size: int, batches, repeats: int, report: Report) -> list[dict[str, Any]]:
    """MambaMIM pre-training step (forward + backward + AdamW), bf16 autocast as `mambamim pretrain`."""
    import torch
    from mambamim.mim.model import MambaMIM

    rows = []
    model = MambaMIM().to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    for batch in batches:
        if report.over_budget():
            raise Skip(f"time budget of {report.budget_s} s spent")
        x = torch.rand(batch, 1, size, size, size, device=device)
        generator = torch.Generator().manual_seed(0)

        def train_step(x=x, generator=generator):
            with torch.autocast(device.type, dtype=torch.bfloat16):
                loss = model(x, generator=generator).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        seconds = timed(train_step, repeats, device)
        rows.append({"batch": batch, "crop": size, "seconds": seconds, "crops_per_s": batch / seconds})
    return rows


def sample_image(args):
    from mambamim.data.imageio import read_image

    path = next((p for p in (PREPARED_SAMPLE, SAMPLE) if p.exists()), None)
    if path is None:
        raise Skip(f"sample CT not found ({SAMPLE} or {PREPARED_SAMPLE}; `make gpu-wheels` copies it)")
    return read_image(path)


def whole_scan(device, sync, args, report: Report) -> list[dict[str, Any]]:
    import torch
    from mambamim.data.intensity import CT_WINDOW
    from mambamim.infer.package import in_memory_package, make_card
    from mambamim.infer.segment import segment_image

    image = sample_image(args)
    labels = [{"value": i, "name": f"organ{i}"} for i in range(1, 14)]
    spacing = 9.0 if args.reduced else 1.5
    rows = []
    for name in ("hymamba", "swin_unetr"):
        roi = REDUCED_WINDOW[name] if args.reduced else 96
        card = make_card(
            name=f"check-{name}", labels=labels, modality="CT", spacing=[spacing] * 3, intensity=CT_WINDOW,
            roi_size=[roi] * 3, overlap=0.5,
        )  # fmt: skip
        package = in_memory_package(build(name).eval(), card, name)
        for fast in (False, True):
            if report.over_budget():
                raise Skip(f"time budget of {report.budget_s} s spent")
            runs = []
            for _ in range(2 if not args.reduced else 1):  # the first run includes warm-up
                sync()
                t = time.perf_counter()
                # the plain path: mirroring TTA (on by default with CUDA) is 8 passes of the same windows
                result = segment_image(image, package, device=device.type, fast=fast, tta=False)
                sync()
                runs.append(time.perf_counter() - t)
            rows.append({
                "model": name, "mode": "fast" if fast else "normal", "fast": fast, "card_spacing": spacing,
                "grid": "x".join(map(str, result.model_shape)), "windows": result.windows["count"],
                "wall_s": runs[-1], "first_run_s": runs[0], "inference_s": result.timings["inference"],
                "notes": result.notes,
                "peak_cuda_gib": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None,
            })  # fmt: skip
    return rows


def oom_fallback(record: dict[str, Any], args) -> None:
    import torch
    from mambamim.infer.sliding_window import sliding_window_logits

    device, _ = device_and_sync(args.reduced)
    torch.manual_seed(0)
    network = build("hymamba").to(device).eval()
    if args.reduced:
        inner = network

        class OutOfMemoryAbove(torch.nn.Module):
            """Stand-in for the CPU form: a batch of more than one window 'does not fit'."""

            def forward(self, x):
                if x.shape[0] > 1:
                    raise torch.OutOfMemoryError("stand-in: out of memory")
                return inner(x)

        network = OutOfMemoryAbove()
        volume, roi, batch = torch.randn(1, 48, 48, 48), 32, 8
    else:
        # all 343 windows of 96³ in one batch: about 1.2 GB each at inference, several times an H200
        volume, roi, batch = torch.randn(1, 384, 384, 384), 96, 343
    notes: list[str] = []
    t = time.perf_counter()
    logits = sliding_window_logits(
        volume, network, [roi] * 3, 0.5, sw_batch_size=batch, sw_device=device, device=device,
        report=notes.append,
    )  # fmt: skip
    record.update(
        notes=notes,
        seconds_to_finish=time.perf_counter() - t,
        finite=bool(torch.isfinite(logits).all()),
        shape=list(logits.shape),
    )
    record["failures"] = []
    if not any("out of memory" in n for n in notes):
        record["failures"].append("no out-of-memory fallback happened")
    if not record["finite"] or list(logits.shape[1:]) != list(volume.shape[1:]):
        record["failures"].append(f"bad output: shape {record['shape']}, finite {record['finite']}")
    record["summary"] = [f"{len(notes)} fallback(s): {'; '.join(notes)}"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ddp_worker(spec: dict[str, Any]) -> None:
    """One rank: a DDP step on HyMamba, then prints the parameters' checksum as JSON."""
    import torch
    import torch.distributed as dist
    from mambamim.engine.distributed import init_distributed, shutdown_distributed, unwrap_model, wrap_model

    ctx = init_distributed("cpu" if spec["reduced"] else "cuda")
    torch.manual_seed(0)
    model = build("hymamba").to(ctx.device)
    if ctx.distributed:
        model = wrap_model(model, ctx)
    else:  # one process: init_distributed makes no group, so make one to run DDP over NCCL all the same
        dist.init_process_group("gloo" if spec["reduced"] else "nccl", rank=0, world_size=1)
        ids = [ctx.device.index or 0] if ctx.device.type == "cuda" else None
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
    size = spec["size"]
    torch.manual_seed(100 + ctx.rank)  # each rank its own batch
    x = torch.randn(1, 1, size, size, size, device=ctx.device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model(x).float().square().mean().backward()
    optimizer.step()
    checksum = sum(float(p.detach().double().sum()) for p in unwrap_model(model).parameters())
    print(json.dumps({"rank": ctx.rank, "world_size": dist.get_world_size(), "checksum": checksum}))
    shutdown_distributed()


def ddp(record: dict[str, Any], args) -> None:
    import torch

    if not args.reduced and not torch.cuda.is_available():
        raise Skip("no CUDA device")
    if not args.reduced and not torch.distributed.is_nccl_available():
        raise Skip("this torch build has no NCCL")
    size = 32 if args.reduced else 64
    attempts = []
    for world_size in (2,) if args.reduced else (2, 1):  # gloo always takes two CPU processes
        port = _free_port()
        procs = []
        for rank in range(world_size):
            env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}
            if world_size > 1:
                env.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size))
            spec = json.dumps({"reduced": args.reduced, "size": size})
            procs.append(subprocess.Popen(
                [sys.executable, __file__, "--ddp-worker", spec], env=env, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True,
            ))  # fmt: skip
        outputs = []
        for proc in procs:
            try:
                out, err = proc.communicate(timeout=args.ddp_timeout)
            except subprocess.TimeoutExpired:
                for p in procs:
                    p.kill()
                out, err = "", f"timed out after {args.ddp_timeout} s"
            outputs.append((proc.returncode, out, err))
        ok = all(code == 0 for code, _, _ in outputs)
        results = [json.loads(out.strip().splitlines()[-1]) for code, out, _ in outputs if code == 0]
        attempt = {"processes": world_size, "ok": ok, "results": results}
        if not ok:
            attempt["error"] = next(err.strip().splitlines()[-1:] for code, _, err in outputs if code != 0)
        attempts.append(attempt)
        if ok:
            break
    record["attempts"] = attempts
    last = attempts[-1]
    record["failures"] = []
    if not last["ok"]:
        record["failures"].append(f"DDP step failed: {last.get('error')}")
    elif len({round(r['checksum'], 6) for r in last["results"]}) != 1:
        record["failures"].append(f"ranks disagree after the step: {last['results']}")
    backend = "gloo" if args.reduced else "nccl"
    record["summary"] = [
        f"{a['processes']} process(es), {backend}: {'ok' if a['ok'] else 'failed: ' + str(a.get('error'))}"
        for a in attempts
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("GPU_CHECK_DIR", "gpu-check")))
    parser.add_argument("--reduced", action="store_true", help="CPU, toy sizes: the CI form")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per figure (median)")
    parser.add_argument("--budget", type=float, default=420.0, help="seconds after which timings stop")
    parser.add_argument("--sections", nargs="+", default=None, help="run only these sections")
    parser.add_argument("--ddp-timeout", type=float, default=120.0, help="seconds per DDP attempt")
    parser.add_argument("--ddp-worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    unpacked = use_prepared_wheels()
    if args.ddp_worker:
        ddp_worker(json.loads(args.ddp_worker))
        return 0
    report = Report(args.out, args.reduced, args.budget)
    sections = {
        "environment": lambda r: environment(r, args, unpacked),
        "scan_parity": lambda r: scan_parity(r, args),
        "model_parity": lambda r: model_parity(r, args),
        "bf16": lambda r: bf16_steps(r, args),
        "oom_fallback": lambda r: oom_fallback(r, args),
        "ddp": lambda r: ddp(r, args),
        "timings": lambda r: timings(r, args, report),
    }
    for name, fn in sections.items():
        if args.sections is None or name in args.sections:
            report.run(name, fn)
    print(summary(json.loads((args.out / "report.json").read_text())))
    print(f"report: {args.out / 'report.json'}, {args.out / 'summary.txt'}")
    return 0 if all(s["status"] != "failed" for s in report.sections.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
