"""Segment one volume with a model package (or an ensemble): preprocess as the card says, sliding
window (optionally mirrored, :mod:`mambamim.infer.tta`), softmax, probabilities back onto the input grid
and their argmax (:mod:`mambamim.infer.probabilities`).

``segment_image`` works on ``SimpleITK`` images in memory (what the Slicer logic and tests use);
``segment_file`` adds reading, the output-path checks, atomic writing and an optional comparison with
reference labels. The returned label map always has exactly the input's size, spacing, origin and
direction. A cancelled run raises :class:`~mambamim.infer.progress.Cancelled` and writes nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch

from mambamim.cpu_memory import format_bytes
from mambamim.data.imageio import check_output_path, read_image, write_image
from mambamim.errors import InvalidInput, Unavailable
from mambamim.infer.card import ModelCard
from mambamim.infer.defaults import default_sw_batch
from mambamim.infer.ensemble import Models, check_same_labels, load_members
from mambamim.infer.input_checks import check_segmentation_input
from mambamim.infer.memory import (
    MemoryEstimate,
    activation_bytes_per_voxel,
    available_bytes,
    estimate_memory,
)
from mambamim.infer.outputs.companions import Companions, write_companions
from mambamim.infer.package import LoadedPackage
from mambamim.infer.preprocess import to_model_space
from mambamim.infer.probabilities import (
    ModelGridProbabilities,
    SavedProbabilities,
    check_probability_path,
    combine,
    default_probability_path,
    label_image,
)
from mambamim.infer.probabilities import check_same_grid as check_probability_grid
from mambamim.infer.probabilities import save_probabilities as save_probabilities_file
from mambamim.infer.progress import CancelToken, ProgressCallback, ProgressEvent, ProgressTracker
from mambamim.infer.sliding_window import sliding_window_logits
from mambamim.infer.tta import MirroredNetwork, mirror_combinations, use_tta
from mambamim.infer.window_policy import plan_windows, window_count

logger = logging.getLogger(__name__)

DEVICES = ("auto", "cuda", "cpu")
# --fast: 1.5x coarser voxels (~3.4x fewer) and less window overlap; the ROI (network input) is unchanged.
FAST_SPACING_FACTOR = 1.5
FAST_OVERLAP = 0.25
_STAGES = {"preprocess": 4.0, "inference": 90.0, "postprocess": 6.0}


@dataclass
class SegmentResult:
    """The label map on the input grid plus what happened: timings (s), device, notes, metrics."""

    labels: sitk.Image
    seconds: float
    timings: dict[str, float]
    device: str
    model_shape: tuple[int, ...]
    notes: list[str] = field(default_factory=list)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    memory_estimate: dict[str, int] = field(default_factory=dict)  # bytes per device, before the run
    windows: dict[str, Any] = field(default_factory=dict)  # policy, roi, overlap, count of the run
    output: Path | None = None
    probabilities: np.ndarray | None = None  # (classes, Z, Y, X) on the input grid, when kept
    members: list[str] = field(default_factory=list)  # packages and probability files averaged
    tta_passes: int = 1  # network passes per window (8 with mirroring)
    probability_file: Path | None = None
    companions: dict[str, Path] = field(default_factory=dict)  # .seg.nrrd, DICOM SEG, statistics, preview


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available else CPU; ``cuda`` without a usable GPU is an error."""
    if name not in DEVICES:
        raise InvalidInput(f"unknown device {name!r}; valid: {', '.join(DEVICES)}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise Unavailable(
            "--device cuda was asked for but torch sees no CUDA GPU (CPU-only build or no driver); "
            "use --device cpu or auto"
        )
    return torch.device(name)


def check_channels(card: ModelCard, package_path: str | Path) -> None:
    """Refuse a package needing more input channels than one image provides."""
    if card.input.channels != 1:
        raise InvalidInput(
            f"model package {package_path} needs {card.input.channels} input channels; "
            "segment takes one image"
        )


def segment_image(
    image: sitk.Image,
    package: LoadedPackage | Sequence[LoadedPackage],
    *,
    device: str = "auto",
    fast: bool = False,
    overlap: float | None = None,
    sw_batch_size: int | None = None,
    keep_largest: bool = False,
    tta: bool | None = None,
    saved: Sequence[SavedProbabilities] = (),
    keep_probabilities: bool = False,
    modality: str | None = None,
    allow_label_map: bool = False,
    allow_other_modality: bool = False,
    allow_small: bool = False,
    window_policy: str = "auto",
    source: str = "the input volume",
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> SegmentResult:
    """Segment ``image`` with ``package`` (or an ensemble of packages); see the module docstring.

    Before any work, label maps, another modality than the card's and volumes too small to segment are
    refused (:func:`mambamim.infer.input_checks.check_segmentation_input`; ``modality`` declares the
    input's modality, each ``allow_*`` turns one check off). ``source`` names the image in messages.
    ``window_policy``: see :mod:`mambamim.infer.window_policy` (an explicit ``overlap`` overrides the
    policy's). ``tta``: mirroring (:mod:`mambamim.infer.tta`; None = the device's default). Several
    packages and ``saved`` probability files are averaged (:mod:`mambamim.infer.ensemble`); with
    ``keep_probabilities`` the result carries the averaged probabilities on the input grid.
    """
    t_start = time.perf_counter()
    packages = [package] if isinstance(package, LoadedPackage) else list(package)
    if not packages and not saved:
        raise InvalidInput("no model package given")
    check_same_labels(
        [(str(p.path), p.card.labels_as_dicts()) for p in packages] + [(str(s.path), s.labels) for s in saved]
    )
    for item in saved:
        check_probability_grid(item, image, source)
    for member in packages:
        check_channels(member.card, member.path)
        check_segmentation_input(
            image,
            source,
            member.card.input.modality,
            modality=modality,
            allow_label_map=allow_label_map,
            allow_other_modality=allow_other_modality,
            allow_small=allow_small,
        )
    tracker = ProgressTracker(progress, _STAGES)
    notes: list[str] = []
    sw_device = resolve_device(device)
    mirrored = use_tta(tta, sw_device.type)
    timings = {"preprocess": 0.0, "inference": 0.0}
    predictions: list[ModelGridProbabilities] = []
    runs: list[dict[str, Any]] = []
    for index, member in enumerate(packages):
        prefix = f"[model {index + 1}/{len(packages)}] " if len(packages) > 1 else ""

        def update(stage: str, fraction: float, message: str, index: int = index, prefix: str = prefix):
            if index > 0 and stage == "preprocess":  # later members: inside the inference stage
                stage, fraction = "inference", 0.0
            if stage == "inference":
                fraction = (index + fraction) / len(packages)
            # "window i/n" is the message GUIs parse: never prefixed
            tracker.update(stage, fraction, message if message.startswith("window ") else prefix + message)

        prediction, run = _predict(
            image, member, sw_device, fast=fast, overlap=overlap, sw_batch_size=sw_batch_size,
            tta=mirrored, window_policy=window_policy, update=update, notes=notes, cancel=cancel,
            timings=timings,
        )  # fmt: skip
        predictions.append(prediction)
        runs.append(run)

    t = time.perf_counter()
    tracker.update("postprocess", 0.0, "probabilities onto the input grid")
    labels, probabilities = combine(predictions, saved, grid=image, keep_probabilities=keep_probabilities)
    if keep_largest:
        from mambamim.infer.postprocess import keep_largest_component

        table = packages[0].card.labels_as_dicts() if packages else saved[0].labels
        labels = keep_largest_component(labels, [label["value"] for label in table])
    label_map = label_image(labels, image)
    timings["postprocess"] = time.perf_counter() - t
    tracker.update("postprocess", 1.0, "label map on the input grid")
    first = runs[0] if runs else {"device": sw_device.type, "model_shape": (), "memory": {}, "windows": {}}
    return SegmentResult(
        labels=label_map,
        seconds=time.perf_counter() - t_start,
        timings=timings,
        device=first["device"],
        model_shape=first["model_shape"],
        notes=notes,
        memory_estimate=first["memory"],
        windows=first["windows"],
        tta_passes=len(mirror_combinations()) if mirrored and runs else 1,
        probabilities=probabilities,
        members=[str(p.path) for p in packages] + [str(s.path) for s in saved],
    )


def _predict(
    image: sitk.Image,
    package: LoadedPackage,
    sw_device: torch.device,
    *,
    fast: bool,
    overlap: float | None,
    sw_batch_size: int | None,
    tta: bool,
    window_policy: str,
    update: Callable[[str, float, str], None],
    notes: list[str],
    cancel: CancelToken | None,
    timings: dict[str, float],
) -> tuple[ModelGridProbabilities, dict[str, Any]]:
    """One package's softmax probabilities on its model grid, and how the run went."""
    card = package.card

    def report(message: str) -> None:
        notes.append(message)
        logger.warning(message)
        update("inference", 0.0, message)

    spacing = np.asarray(card.input.spacing, dtype=float)
    run_overlap = card.input.overlap
    if fast:
        spacing = spacing * FAST_SPACING_FACTOR
        run_overlap = min(run_overlap, FAST_OVERLAP)

    update("preprocess", 0.0, f"resampling to {spacing.round(3).tolist()} mm")
    t = time.perf_counter()
    array, ref = to_model_space(image, spacing.tolist(), dict(card.input.intensity))
    timings["preprocess"] += time.perf_counter() - t
    update("preprocess", 1.0, f"model grid {list(array.shape)}")
    if cancel is not None:
        cancel.raise_if_cancelled()

    network = package.model.to(sw_device).eval()
    num_classes = card.num_classes
    batch = int(sw_batch_size or default_sw_batch(sw_device.type))
    card_roi = list(card.input.roi_size)
    per_voxel = activation_bytes_per_voxel(network, 1, card_roi)  # one probe pass, reused below
    plan = plan_windows(
        network,
        array.shape,
        card_roi,
        run_overlap,
        policy=window_policy,
        device_type=sw_device.type,
        activation_per_voxel=per_voxel,
        free_bytes=available_bytes(sw_device),
    )
    roi = list(plan.roi)
    run_overlap = plan.overlap if overlap is None else float(overlap)
    # not "window ...": that prefix is the per-window progress message that GUIs parse
    mirroring = f", mirroring TTA x{len(mirror_combinations())}" if tta else ""
    layout = f"sliding {roi} windows at overlap {run_overlap} ({plan.policy}: {plan.reason}){mirroring}"
    update("inference", 0.0, layout)
    batch, stitch_device, estimate = _plan_memory(
        network, array.shape, roi, num_classes, sw_device, batch, report, per_voxel
    )
    needs = ", ".join(
        f"{format_bytes(estimate.needed_on(d))} on {d}" for d in sorted({sw_device.type, "cpu"})
    )
    update("inference", 0.0, f"estimated memory: {needs}; sw_batch_size={batch}")

    def on_window(done: int, total: int) -> None:
        update("inference", done / total, f"window {done}/{total}")

    t = time.perf_counter()
    volume = torch.from_numpy(array)[None]
    del array
    logits = sliding_window_logits(
        volume,
        MirroredNetwork(network) if tta else network,
        roi,
        run_overlap,
        sw_batch_size=batch,
        sw_device=sw_device,
        device=stitch_device,
        on_window=on_window,
        cancel=cancel,
        report=report,
    )
    del volume
    probabilities = torch.softmax(logits, dim=0).cpu().numpy()
    del logits
    timings["inference"] += time.perf_counter() - t
    if cancel is not None:
        cancel.raise_if_cancelled()
    run = {
        "device": f"{sw_device.type} (stitching on {stitch_device.type})"
        if stitch_device != sw_device
        else sw_device.type,
        "model_shape": tuple(ref.model_size),
        "memory": {d: estimate.needed_on(d) for d in {estimate.network_device, estimate.stitch_device}},
        "windows": {
            "policy": plan.policy,
            "roi": roi,
            "overlap": run_overlap,
            "count": window_count(ref.model_size, roi, run_overlap),
        },
    }
    return ModelGridProbabilities(probabilities, ref), run


def segment_file(
    input_path: str | Path,
    output_path: str | Path,
    model: Models,
    *,
    overwrite: bool = False,
    reference: str | Path | None = None,
    save_probabilities: str | Path | bool | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    companions: Companions | None = None,
    **options: Any,
) -> SegmentResult:
    """Read ``input_path``, segment it, write the label map atomically to ``output_path``.

    ``options`` are those of :func:`segment_image`. With ``reference`` (a label map on the input grid)
    the result carries per-organ Dice / HD95 in ``metrics``. ``model``: a package, or several packages
    and ``.npz`` probability files to average (:mod:`mambamim.infer.ensemble`). ``save_probabilities``:
    a ``.npz`` path, or True for ``<output>.probabilities.npz`` beside the label map
    (:mod:`mambamim.infer.probabilities`). ``companions``: the files written beside the label map
    (:mod:`mambamim.infer.outputs.companions`), checked before any work. Progress: 5 % reading, 90 %
    segmenting, 5 % writing; nothing is written when cancelled or on error.
    """
    output_path = check_output_path(output_path, overwrite)
    probability_path = None
    if save_probabilities:
        probability_path = check_probability_path(
            default_probability_path(output_path) if save_probabilities is True else save_probabilities,
            overwrite,
        )
    if companions is not None:
        companions.check(output_path, overwrite)
    t_start = time.perf_counter()
    progress = progress or (lambda event: None)
    progress(ProgressEvent("load", 0.0, None, f"reading {input_path}"))
    t = time.perf_counter()
    image = read_image(input_path)
    read_s = time.perf_counter() - t
    t = time.perf_counter()
    packages, saved = load_members(model)
    load_s = time.perf_counter() - t
    labels_table = packages[0].card.labels_as_dicts() if packages else saved[0].labels
    reference_image = None
    if reference is not None:
        from mambamim.infer.evaluate import check_same_grid

        reference_image = read_image(reference, allow_constant=True)
        check_same_grid(image, reference_image, where=f"input {input_path}")
    names = [f"{p.card.name} {p.card.version}" for p in packages] + [s.path.name for s in saved]
    progress(ProgressEvent("load", 0.05, None, f"model {', '.join(names)}"))
    if cancel is not None:
        cancel.raise_if_cancelled()

    def inner(event: ProgressEvent) -> None:
        progress(ProgressEvent(event.stage, 0.05 + 0.9 * event.fraction, event.eta_s, event.message))

    options.setdefault("source", str(input_path))
    result = segment_image(
        image, packages, saved=saved, keep_probabilities=probability_path is not None, progress=inner,
        cancel=cancel, **options,
    )  # fmt: skip
    if cancel is not None:
        cancel.raise_if_cancelled()
    check_output_path(output_path, overwrite)  # again: the folder may have changed during the run
    progress(ProgressEvent("write", 0.95, None, f"writing {output_path}"))
    t = time.perf_counter()
    result.output = write_image(result.labels, output_path, overwrite=overwrite)
    try:
        if probability_path is not None:
            result.probability_file = save_probabilities_file(
                probability_path, result.probabilities, labels_table, image, result.members, overwrite
            )
        if companions is not None:
            result.companions = write_companions(
                companions, result.labels, image, output_card(packages, saved), input_path,
                overwrite=overwrite, notes=result.notes,
            )  # fmt: skip
    except BaseException:
        result.output.unlink(missing_ok=True)  # all or nothing
        if result.probability_file is not None:
            result.probability_file.unlink(missing_ok=True)
        raise
    result.timings = {
        "read": read_s,
        "load_model": load_s,
        **result.timings,
        "write": time.perf_counter() - t,
    }
    if reference_image is not None:
        from mambamim.infer.evaluate import compare_label_maps

        result.metrics = compare_label_maps(
            result.labels, reference_image, labels_table, hd95=False
        )
    result.seconds = time.perf_counter() - t_start
    return result


def output_card(packages: Sequence[LoadedPackage], saved: Sequence[SavedProbabilities]) -> ModelCard:
    """The card that describes the result's files: the first package's; for probability files alone a
    stand-in with their label table (no intensity window: previews use percentiles)."""
    if packages:
        return packages[0].card
    from mambamim.infer.card import Architecture, InputSpec, Label

    first = saved[0]
    return ModelCard(
        name="ensemble of probability files",
        version="",
        architecture=Architecture("", MappingProxyType({})),
        input=InputSpec(
            channels=1, modality="CT", spacing=tuple(first.grid.GetSpacing()),
            intensity=MappingProxyType({"type": "zscore"}), roi_size=(1, 1, 1), overlap=0.0,
        ),
        labels=tuple(
            Label(int(e["value"]), str(e["name"]), tuple(e.get("color") or (128, 128, 128)), e.get("snomed"))
            for e in first.labels
        ),
        weights_file="",
        weights_sha256="",
    )


def _plan_memory(
    network: torch.nn.Module,
    model_shape: tuple[int, ...],
    roi: list[int],
    num_classes: int,
    sw_device: torch.device,
    batch: int,
    report: Callable[[str], None],
    per_voxel: float,
) -> tuple[int, torch.device, MemoryEstimate]:
    """Choose the window batch and stitching device that fit (with their estimate), or refuse with advice.

    Same order as the run-time fallback: a smaller window batch first, then stitching on the CPU.
    """
    def estimate(b: int, stitch: torch.device) -> MemoryEstimate:
        return estimate_memory(
            network,
            in_channels=1,
            num_classes=num_classes,
            model_shape=model_shape,
            roi_size=roi,
            sw_batch_size=b,
            network_device=sw_device.type,
            stitch_device=stitch.type,
            activation_per_voxel=per_voxel,
        )

    free = available_bytes(sw_device)
    stitch = sw_device
    est = estimate(batch, stitch)
    while est.needed_on(sw_device.type) > free and batch > 1:
        batch //= 2
        est = estimate(batch, stitch)
        if est.needed_on(sw_device.type) <= free:
            report(f"limited memory: sw_batch_size={batch}")
    if sw_device.type == "cuda" and est.needed_on("cuda") > free:
        stitch = torch.device("cpu")
        est = estimate(batch, stitch)
        report("the output does not fit on the GPU next to the network: stitching on the CPU")
    if est.needed_on(sw_device.type) > free:
        where = "GPU memory" if sw_device.type == "cuda" else "RAM"
        advice = (
            "use --device cpu or free the GPU"
            if sw_device.type == "cuda"
            else ("try --fast (coarser grid), close other programs, or use a GPU")
        )
        raise MemoryError(
            f"segmenting needs about {format_bytes(est.needed_on(sw_device.type))} of {where} "
            f"(model grid {list(model_shape)}, {num_classes} classes) but only {format_bytes(free)} "
            f"is available; {advice}"
        )
    ram = available_bytes("cpu")
    if stitch.type == "cpu" and sw_device.type == "cuda" and est.needed_on("cpu") > ram:
        raise MemoryError(
            f"stitching needs about {format_bytes(est.needed_on('cpu'))} of RAM but only {format_bytes(ram)} "
            "is available; try --fast (coarser grid)"
        )
    return batch, stitch, est
