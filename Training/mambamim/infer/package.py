"""Model packages: ``weights.safetensors`` + ``model.json`` (the model card) in a folder or a .zip.

The card is the single source of truth at inference time: which network to build (registered name
and constructor config), what the input must look like (channels, modality, spacing, intensity
normalisation, ROI size, overlap) and what the output labels mean (value, name, colour, optional
SNOMED-CT code). Loading verifies the SHA-256 of the weights and that they load *strictly* into
``build_model(name, **config)``, so a package can never silently run with wrong or partial weights.

The card's ``weights.file`` must be a plain file name inside the package: a path (``../x``, ``/etc/x``,
``sub/x``) or anything but a regular file (a device such as ``/dev/zero``, a link leaving the package)
is refused before anything is read. A ``.zip`` package may hold only plain top-level (or one-folder)
member names and at most ``MAX_PACKAGE_BYTES`` once decompressed, counted while reading, not taken
from the archive's own size fields.
"""

from __future__ import annotations

import hashlib
import inspect
import io
import json
import os
import stat
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mambamim.data.labels import LabelError, parse_labels
from mambamim.infer.card import (
    CARD_FILE,
    FORMAT_VERSION,
    ModelCard,
    PackageError,
    check_input_section,
    is_plain_name,
)
from mambamim.nn.state_dict import strict_mismatch
from mambamim.safe_write import safe_write

WEIGHTS_FILE = "weights.safetensors"
# The largest network we ship or train is well under 1 GB of float32 weights.
MAX_PACKAGE_BYTES = 4 * 2**30
# The ``format`` of fine-tuning checkpoints, from which packages are made.
FINETUNE_FORMAT = "mambamim-finetune"
@dataclass
class LoadedPackage:
    """A verified package: the network in eval mode with its weights, the card, where it came from."""

    model: nn.Module
    card: ModelCard
    path: Path


def make_card(
    *,
    name: str,
    labels: Mapping[str, Any] | Sequence[Mapping[str, Any]],
    modality: str,
    spacing: Sequence[float],
    intensity: dict[str, Any],
    roi_size: Sequence[int],
    overlap: float = 0.5,
    channels: int = 1,
    version: str = "1.0.0",
    license: str = "unspecified",
    training_data: str = "",
    metrics: dict[str, Any] | None = None,
    description: str = "",
) -> dict[str, Any]:
    """The card fields a caller provides; :func:`save_package` adds architecture, weights and format."""
    card = {
        "name": name,
        "version": version,
        "description": description,
        "input": {
            "channels": int(channels),
            "modality": modality,
            "spacing": [float(s) for s in spacing],
            "intensity": intensity,
            "roi_size": [int(r) for r in roi_size],
            "overlap": float(overlap),
        },
        "labels": _labels(labels),
        "license": license,
        "training_data": training_data,
        "metrics": dict(metrics or {}),
    }
    check_input_section(card["input"], "card")
    return card


def save_package(
    out_dir: str | Path,
    *,
    model_name: str,
    model_config: dict[str, Any],
    state_dict: Mapping[str, torch.Tensor],
    card: dict[str, Any],
    overwrite: bool = False,
) -> Path:
    """Write a package folder atomically (build in a temporary sibling folder, then rename).

    The weights are checked to load strictly into ``build_model(model_name, **model_config)`` before
    anything is written, and the label table is checked against the network's output channels.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"package folder {out_dir} already exists; pass --overwrite to replace it")
    from safetensors.torch import save

    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()}
    model = _build_strict(model_name, model_config, tensors, where=f"package {out_dir}")
    blob = save(tensors, metadata={"format": "pt"})
    full = _full_card(card, model_name, model_config, hashlib.sha256(blob).hexdigest())
    # The whole card is checked, and the network against it, before anything is written.
    where = f"package {out_dir}"
    _check_architecture_fits_card(model, ModelCard.from_dict(full, where), where)
    with safe_write(out_dir) as tmp:
        tmp.mkdir()
        (tmp / WEIGHTS_FILE).write_bytes(blob)
        (tmp / CARD_FILE).write_text(json.dumps(full, indent=2) + "\n")
    return out_dir


def package_checkpoint(
    checkpoint: str | Path,
    out_dir: str | Path,
    *,
    labels: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
    name: str | None = None,
    version: str = "1.0.0",
    modality: str | None = None,
    spacing: Sequence[float] | None = None,
    intensity: dict[str, Any] | None = None,
    roi_size: Sequence[int] | None = None,
    overlap: float | None = None,
    license: str | None = None,
    training_data: str | None = None,
    metrics: dict[str, Any] | None = None,
    description: str = "",
    overwrite: bool = False,
) -> Path:
    """A model package from a fine-tuning checkpoint (``mambamim package`` and the end of a fine-tuning run).

    The network and its weights come from the checkpoint; every card field that is not given (``None``)
    comes from the run's settings stored in it, else a default: modality CT, spacing 1.5 mm, intensity by
    modality, the crop size as window, overlap 0.5, the checkpoint's validation metrics.
    """
    from mambamim.checkpoint import load_checkpoint
    from mambamim.data.intensity import CT_WINDOW, MR_ZSCORE
    from mambamim.infer.card_metrics import checkpoint_card_metrics

    payload = load_checkpoint(checkpoint, expected_format=FINETUNE_FORMAT)
    config = payload.get("config") or {}
    if not config.get("model_name") or "model" not in payload:
        raise PackageError(f"checkpoint {checkpoint} lacks config.model_name or the model state dict")
    # Fine-tuning stores its settings under config.training.
    training = {**config, **(config.get("training") or {})}
    labels = labels if labels is not None else training.get("labels")
    if not labels:
        raise PackageError(f"checkpoint {checkpoint} has no label table; give one (--labels)")
    modality = modality or training.get("modality", "CT")
    roi = roi_size or training.get("roi_size") or int(training.get("roi", 96))
    by_modality = CT_WINDOW if modality == "CT" else MR_ZSCORE
    card = make_card(
        name=name or training.get("package_name") or f"{config['model_name']}-finetuned",
        labels=labels,
        modality=modality,
        spacing=spacing or training.get("spacing") or [1.5, 1.5, 1.5],
        intensity=intensity or training.get("intensity") or dict(by_modality),
        roi_size=[roi] * 3 if isinstance(roi, int) else roi,
        overlap=overlap if overlap is not None else float(training.get("overlap", 0.5)),
        version=version,
        license=license or training.get("license") or "unspecified",
        training_data=training_data or training.get("training_data") or "",
        metrics=metrics if metrics is not None else (
            training.get("metrics") or checkpoint_card_metrics(payload)
        ),
        description=description,
    )  # fmt: skip
    # DDP checkpoints prefix every key with "module."; packages hold the bare network's names.
    state = {k.removeprefix("module."): v for k, v in payload["model"].items()}
    return save_package(
        out_dir,
        model_name=config["model_name"],
        model_config=config.get("model_config") or {},
        state_dict=state,
        card=card,
        overwrite=overwrite,
    )


def in_memory_package(
    model: nn.Module, card: dict[str, Any], model_name: str, model_config: dict[str, Any] | None = None
) -> LoadedPackage:
    """A package of a network that is not saved (benchmarks and checks with random weights); ``card`` as
    :func:`make_card` returns it."""
    full = _full_card(card, model_name, model_config or {}, hashlib.sha256(b"").hexdigest())
    path = Path(f"<{model_name}, not saved>")
    return LoadedPackage(model=model, card=ModelCard.from_dict(full, f"package {path}"), path=path)


def _full_card(
    card: dict[str, Any], model_name: str, model_config: dict[str, Any], sha256: str
) -> dict[str, Any]:
    """The on-disk card: ``card``'s fields, then the format, the architecture and the weights' hash."""
    full = {
        **{k: v for k, v in card.items() if k not in ("format_version", "architecture", "weights")},
        "format_version": FORMAT_VERSION,
        "architecture": {"name": model_name, "config": dict(model_config)},
        "weights": {"file": WEIGHTS_FILE, "sha256": sha256},
    }
    full["labels"] = _labels(full.get("labels", []))
    return full


def write_zip(package_dir: str | Path, zip_path: str | Path, overwrite: bool = False) -> Path:
    """Archive a package folder as a .zip (card and weights at the top level), atomically."""
    package_dir, zip_path = Path(package_dir), Path(zip_path)
    read_card(package_dir)  # never archive an invalid package
    if zip_path.exists() and not overwrite:
        raise FileExistsError(f"archive {zip_path} already exists; pass --overwrite to replace it")
    with safe_write(zip_path) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for item in sorted(package_dir.iterdir()):
            if item.is_file():
                archive.write(item, item.name)
    return zip_path


def read_card(path: str | Path) -> ModelCard:
    """The validated card of a package folder or .zip, without loading the weights."""
    card, _ = _read_package_files(Path(path), with_weights=False)
    return card


def load_package(path: str | Path, device: str | torch.device = "cpu") -> LoadedPackage:
    """Load and verify a package (folder or .zip): SHA-256 of the weights, then a strict state-dict load."""
    path = Path(path)
    card, weights = _read_package_files(path, with_weights=True)
    arch = card.architecture
    model = _build_strict(arch.name, dict(arch.config), weights, where=f"package {path}")
    _check_architecture_fits_card(model, card, where=f"package {path}")
    return LoadedPackage(model=model.to(device).eval(), card=card, path=path)


def _labels(table: Any) -> list[dict[str, Any]]:
    try:
        return parse_labels(table)
    except LabelError as exc:
        raise PackageError(f"card: {exc}") from None


def _read_package_files(path: Path, *, with_weights: bool) -> tuple[ModelCard, dict[str, torch.Tensor]]:
    """Card (validated) and, optionally, the hash-verified weights of a folder or .zip package."""
    if not path.exists():
        raise PackageError(f"model package {path} does not exist")
    if path.is_dir():
        card_path = path / CARD_FILE
        if not card_path.is_file():
            raise PackageError(f"model package {path} has no {CARD_FILE}")
        card = _parse_card(_read_regular_file(card_path, path), path)
        if not with_weights:
            return card, {}
        blob = _read_regular_file(path / card.weights_file, path)
    elif zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            unsafe = [n for n in names if not all(is_plain_name(part) for part in n.rstrip("/").split("/"))]
            if unsafe or any(n.count("/") - n.endswith("/") > 1 for n in names):
                raise PackageError(
                    f"model package {path}: the archive holds unsafe or nested member names "
                    f"({', '.join(repr(n) for n in (unsafe or names)[:3])}); "
                    "only plain file names are allowed"
                )
            declared = sum(info.file_size for info in archive.infolist())
            if declared > MAX_PACKAGE_BYTES:
                raise PackageError(
                    f"model package {path}: the archive decompresses to {declared / 2**30:.1f} GiB, "
                    f"more than the {MAX_PACKAGE_BYTES // 2**30} GiB a model package may hold"
                )
            card_names = [n for n in names if n == CARD_FILE or n.endswith("/" + CARD_FILE)]
            if len(card_names) != 1:
                raise PackageError(f"model package {path}: the archive must hold exactly one {CARD_FILE}")
            prefix = card_names[0][: -len(CARD_FILE)]
            card = _parse_card(_read_member(archive, card_names[0], path), path)
            if not with_weights:
                return card, {}
            member = prefix + card.weights_file
            if member not in names:
                raise PackageError(f"model package {path}: weights file {member} is missing from the archive")
            blob = _read_member(archive, member, path)
    else:
        raise PackageError(f"model package {path} is neither a package folder nor a .zip archive")
    digest = hashlib.sha256(blob).hexdigest()
    if digest != card.weights_sha256:
        raise PackageError(
            f"model package {path}: SHA-256 of {card.weights_file} is {digest}, the card says "
            f"{card.weights_sha256}; the weights are corrupt or were replaced"
        )
    return card, _deserialize_weights(blob, card.weights_file, path)


def _read_regular_file(file: Path, package: Path) -> bytes:
    """Bytes of a regular file inside the package folder (no devices, no links leading out)."""
    where = f"model package {package}"
    try:
        mode = os.stat(file).st_mode
    except OSError:
        raise PackageError(f"{where}: {file.name} is missing") from None
    if not stat.S_ISREG(mode):
        raise PackageError(f"{where}: {file.name} is not a regular file (a device, folder or pipe)")
    if file.resolve().parent != package.resolve():
        raise PackageError(f"{where}: {file.name} is a link to {file.resolve()}, outside the package")
    if os.stat(file).st_size > MAX_PACKAGE_BYTES:
        raise PackageError(f"{where}: {file.name} is larger than {MAX_PACKAGE_BYTES // 2**30} GiB")
    return file.read_bytes()


def _read_member(archive: zipfile.ZipFile, name: str, package: Path) -> bytes:
    """A member's bytes, refusing more than ``MAX_PACKAGE_BYTES`` whatever the archive declares."""
    chunks, total = [], 0
    try:
        with archive.open(name) as member:
            for chunk in iter(lambda: member.read(1 << 20), b""):
                total += len(chunk)
                if total > MAX_PACKAGE_BYTES:
                    raise PackageError(
                        f"model package {package}: {name} decompresses to more than "
                        f"{MAX_PACKAGE_BYTES // 2**30} GiB; refusing a zip bomb"
                    )
                chunks.append(chunk)
    except (zipfile.BadZipFile, zlib.error, EOFError) as err:
        raise PackageError(f"model package {package}: {name} is corrupt in the archive ({err})") from None
    return b"".join(chunks)


def _parse_card(raw: bytes, path: Path) -> ModelCard:
    try:
        card = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise PackageError(f"model package {path}: {CARD_FILE} is not valid JSON ({err})") from None
    return ModelCard.from_dict(card, where=f"model package {path}")


def _deserialize_weights(blob: bytes, name: str, path: Path) -> dict[str, torch.Tensor]:
    try:
        if name.endswith(".safetensors"):
            from safetensors.torch import load

            return load(blob)
        state = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    except Exception as err:  # safetensors / pickle errors have no common base class
        raise PackageError(f"model package {path}: cannot read weights {name}: {err}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PackageError(f"model package {path}: weights {name} is not a flat state dict of tensors")
    return state


def _build_strict(
    name: str, config: dict[str, Any], state_dict: Mapping[str, torch.Tensor], where: str
) -> nn.Module:
    from mambamim.nn import build_model

    try:
        model = build_model(name, **config)
    except (TypeError, ValueError) as err:
        raise PackageError(
            f"{where}: cannot build architecture {name!r} with config {config}: {err}"
        ) from None
    mismatch = strict_mismatch(model, state_dict)
    if mismatch is not None:
        raise PackageError(
            f"{where}: the weights do not match architecture {name!r} with config {config}: {mismatch}"
        )
    model.load_state_dict(state_dict, strict=True)
    return model


def _constructor_value(model: nn.Module, key: str, config: dict[str, Any]) -> Any:
    if key in config:
        return config[key]
    parameter = inspect.signature(type(model)).parameters.get(key)
    return None if parameter is None else parameter.default


def _check_architecture_fits_card(model: nn.Module, card: ModelCard, where: str) -> None:
    config = dict(card.architecture.config)
    out_channels = _constructor_value(model, "out_channels", config)
    max_value = card.num_classes - 1
    if isinstance(out_channels, int) and max_value >= out_channels:
        raise PackageError(
            f"{where}: label value {max_value} needs at least {max_value + 1} output channels, "
            f"the network has {out_channels}"
        )
    in_channels = _constructor_value(model, "in_channels", config)
    if isinstance(in_channels, int) and card.input.channels != in_channels:
        raise PackageError(
            f"{where}: card says {card.input.channels} input channels, the network takes {in_channels}"
        )
    multiple = getattr(model, "size_multiple", 1)
    if any(r % multiple for r in card.input.roi_size):
        raise PackageError(
            f"{where}: roi_size {list(card.input.roi_size)} must be a multiple of the network's "
            f"size_multiple {multiple}"
        )


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
