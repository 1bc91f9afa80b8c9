"""A trained nnU-Net v2 model folder -> our model package (``mambamim package --from-nnunet``).

The folder is nnU-Net's ``nnUNet_results/DatasetXXX/TRAINER__PLANS__CONFIGURATION`` (``plans.json``,
``dataset.json``, ``fold_N/checkpoint_final.pth``) of one of our trainers. One fold becomes one package:
the network the trainer builds from the plan, its weights, and a card carrying nnU-Net's preprocessing as
far as our pipeline expresses it:

- spacing and sliding-window size: the configuration's ``spacing`` and ``patch_size`` (both in nnU-Net's
  array order) put in our (x, y, z) order; overlap 0.5 (nnU-Net's ``tile_step_size``);
- axes: nnU-Net's arrays are SimpleITK's ``[z, y, x]`` (or nibabel's ``[x, y, z]``), transposed by the
  plan's ``transpose_forward``; the network is wrapped in :class:`~mambamim.nn.axis_order.PermutedAxes`
  so it sees that order. Our pipeline works in RAS: for files not stored axis-aligned near RAS/LPS the
  axes still match, flips are possible (nnU-Net's mirroring augmentation trains for them by default);
- intensity: ``CTNormalization`` -> ``clip_zscore`` with the plan's foreground percentiles, mean and std
  (the same numbers); ``ZScoreNormalization`` -> ``zscore`` (ours over non-zero voxels, nnU-Net's over
  the image unless ``use_mask_for_norm``);
- labels: ``dataset.json``'s names (region-based training and cascades are refused).

Not carried over: nnU-Net's crop to the non-zero box, its mirroring test-time augmentation, the
postprocessing chosen by ``nnUNetv2_find_best_configuration``, and ensembles of several folds (convert
each fold to its own package).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from mambamim.errors import MambaMIMError

READER_AXES = {"SimpleITKIO": (2, 1, 0), "NibabelIO": (0, 1, 2), "NibabelIOWithReorient": (0, 1, 2)}


class NNUNetConversionError(MambaMIMError, ValueError):
    """The nnU-Net model folder cannot become one of our packages; the message says why."""


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise NNUNetConversionError(f"{path} not found: is {path.parent} an nnU-Net v2 model folder?")
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise NNUNetConversionError(f"{path}: not readable JSON ({err})") from None


def available_folds(results_folder: Path, checkpoint_name: str = "checkpoint_final.pth") -> list[str]:
    """Folds of ``results_folder`` that hold ``checkpoint_name``, as nnU-Net names them ("0".., "all")."""
    folds = [p.name.removeprefix("fold_") for p in sorted(results_folder.glob("fold_*"))]
    return [f for f in folds if (results_folder / f"fold_{f}" / checkpoint_name).is_file()]


def _trainer_class(name: str):
    """Our trainer class ``name``: the shipped ones, else nnU-Net's lookup (``nnUNet_extTrainer``)."""
    from mambamim.nnunet import trainers

    cls = getattr(trainers, name, None)
    if cls is None:
        from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

        try:
            cls = recursive_find_trainer_class_by_name(name)
        except RuntimeError as err:
            raise NNUNetConversionError(f"trainer {name!r} not found: {err}") from None
    if not (isinstance(cls, type) and issubclass(cls, trainers.MambaMIMTrainer)):
        raise NNUNetConversionError(
            f"the model was trained with {name}, not a MambaMIM trainer (nnUNetTrainerHyMamba, "
            "nnUNetTrainerSegMamba, ... or a subclass); only our networks convert to our packages"
        )
    return cls


def _intensity(plans: dict[str, Any], scheme: str) -> dict[str, Any]:
    if scheme == "ZScoreNormalization":
        return {"type": "zscore"}
    if scheme == "CTNormalization":
        props = plans["foreground_intensity_properties_per_channel"]["0"]
        return {
            "type": "clip_zscore",
            "lower": float(props["percentile_00_5"]),
            "upper": float(props["percentile_99_5"]),
            "mean": float(props["mean"]),
            "std": max(float(props["std"]), 1e-8),
        }
    raise NNUNetConversionError(
        f"normalization scheme {scheme} has no equivalent here (CTNormalization, ZScoreNormalization)"
    )


def _labels(dataset_json: dict[str, Any]) -> dict[str, str]:
    table = {}
    for name, value in dataset_json["labels"].items():
        if not isinstance(value, int):
            raise NNUNetConversionError(f"label {name!r} is a region {value!r}: region models do not convert")
        if value != 0 and name != "ignore":
            table[str(value)] = name
    return table


def package_from_nnunet(
    results_folder: str | Path,
    out: str | Path,
    *,
    fold: str | None = None,
    checkpoint_name: str = "checkpoint_final.pth",
    name: str | None = None,
    version: str = "1.0.0",
    license: str = "unspecified",
    overwrite: bool = False,
) -> Path:
    """Write the package of one fold (default: the first available) of ``results_folder`` to ``out``."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from mambamim.infer.package import make_card, save_package

    results_folder = Path(results_folder)
    plans = _read_json(results_folder / "plans.json")
    dataset_json = _read_json(results_folder / "dataset.json")
    folds = available_folds(results_folder, checkpoint_name)
    if not folds:
        raise NNUNetConversionError(f"{results_folder} holds no fold_*/{checkpoint_name}")
    fold = str(fold) if fold is not None else folds[0]
    if fold not in folds:
        raise NNUNetConversionError(f"{results_folder} has no fold_{fold}/{checkpoint_name}; folds: {folds}")
    checkpoint_path = results_folder / f"fold_{fold}" / checkpoint_name
    # nnU-Net checkpoints pickle numpy values besides the weights (nnU-Net loads them the same way).
    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
    trainer = _trainer_class(checkpoint["trainer_name"])
    configuration = checkpoint["init_args"]["configuration"]

    plans_manager = PlansManager(plans)
    config = plans_manager.get_configuration(configuration)
    if config.previous_stage_name is not None:
        raise NNUNetConversionError(f"configuration {configuration} is a cascade stage: not convertible")
    if plans_manager.get_label_manager(dataset_json).has_regions:
        raise NNUNetConversionError("region-based models do not convert")
    channels = dataset_json.get("channel_names", dataset_json.get("modality", {}))
    if len(channels) != 1:
        raise NNUNetConversionError(f"the model takes {len(channels)} input channels; packages take one")
    reader = plans.get("image_reader_writer", "SimpleITKIO")
    if reader not in READER_AXES:
        raise NNUNetConversionError(f"image reader {reader} is not supported ({', '.join(READER_AXES)})")
    # nnU-Net's network axis n is reader-array axis transpose_forward[n], i.e. our axis axes[n].
    axes = tuple(READER_AXES[reader][t] for t in plans["transpose_forward"])
    heads = plans_manager.get_label_manager(dataset_json).num_segmentation_heads
    spec = trainer.network_spec(config, 1, heads, False)
    network_config = {k: v for k, v in spec.items() if k not in ("in_channels", "out_channels")}
    state = checkpoint["network_weights"]
    if axes == (0, 1, 2):
        model_name, model_config = trainer.model_name, spec
    else:
        model_name = "permuted_axes"
        model_config = {"in_channels": 1, "out_channels": heads, "network": trainer.model_name,
                        "network_config": network_config, "axes": list(axes)}  # fmt: skip
        state = {f"network.{k}": v for k, v in state.items()}
    spacing, roi = [0.0] * 3, [0] * 3
    for n, ours in enumerate(axes):
        spacing[ours], roi[ours] = float(config.spacing[n]), int(config.patch_size[n])
    modality = "CT" if "ct" in str(next(iter(channels.values()))).lower() else "MR"
    summary = results_folder / f"fold_{fold}" / "validation" / "summary.json"
    metrics = {}
    if summary.is_file():
        dice = _read_json(summary).get("foreground_mean", {}).get("Dice")
        if dice is not None:
            metrics = {"nnunet_validation_foreground_dice": float(dice)}
    card = make_card(
        name=name or Path(out).name,
        labels=_labels(dataset_json),
        modality=modality,
        spacing=spacing,
        intensity=_intensity(plans, config.normalization_schemes[0]),
        roi_size=roi,
        overlap=0.5,
        version=version,
        license=license,
        training_data=f"nnU-Net dataset {plans.get('dataset_name', '')}",
        metrics=metrics,
        description=(
            f"{trainer.__name__} ({trainer.model_name}), nnU-Net v2 {plans.get('plans_name', '')} "
            f"{configuration}, fold {fold}, {checkpoint_name}; converted from {results_folder.name}"
        ),
    )
    return save_package(
        out, model_name=model_name, model_config=model_config, state_dict=state, card=card,
        overwrite=overwrite,
    )  # fmt: skip
