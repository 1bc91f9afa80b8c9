"""Build the demonstration models shipped in ``Resources/models/`` from the sample CT, reproducibly.

    python Training/make_demo_models.py            # both models, about an hour on 2 CPU cores
    python Training/make_demo_models.py --quick    # a few steps each into a temporary folder (smoke run)

1. ``btcv-hymamba-demo/``: a small HyMamba (channels 8-96, ~11 MB) fine-tuned with ``mambamim finetune``
   on ONE scan (``../shared/data/ct_abdomen/ct.nii.gz``) against machine-made TotalSegmentator labels
   in BTCV order. It exists so that the README's main command and the Slicer module work out of the
   box; it is not a clinical or research-grade model, and its card says so.
2. ``mambamim-demo/mambamim-demo.pt``: a tiny MambaMIM pre-trained with ``mambamim pretrain`` on the
   same scan, for the reconstruction view (``mambamim reconstruct``); plus its ``encoder.safetensors``.

Both use 3 mm voxels (the scan's own spacing) and small crops so that CPU training stays short.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "ct_abdomen"

# Organ colours close to 3D Slicer's GenericAnatomyColors / TotalSegmentator conventions.
BTCV_COLORS = {
    "spleen": [157, 108, 162],
    "kidney_right": [185, 102, 83],
    "kidney_left": [212, 126, 151],
    "gallbladder": [139, 150, 98],
    "esophagus": [211, 171, 143],
    "liver": [221, 130, 101],
    "stomach": [216, 191, 216],
    "aorta": [224, 97, 76],
    "inferior_vena_cava": [0, 151, 206],
    "portal_vein_and_splenic_vein": [0, 112, 165],
    "pancreas": [249, 180, 111],
    "adrenal_gland_right": [244, 214, 49],
    "adrenal_gland_left": [250, 210, 139],
}

FINETUNE = {
    "model": {"channels": [8, 16, 32, 48, 96]},
    "spacing": [3.0, 3.0, 3.0],
    # 64³ crops at 3 mm see most of the abdomen at once, so every organ gets gradient in every step
    "roi": 64,
    "num_samples": 2,
    "batch": 2,
    "epochs": 1000,  # one volume: one step per epoch (250 left the small organs unlearned)
    "val_every": 1000,
    "lr": 2e-3,  # 5e-3 diverges with the published HyMamba layout
    "warmup_epochs": 20.0,
    "min_lr_factor": 0.01,
    "sw_batch": 2,
}
PRETRAIN = {
    "model": {
        "encoder_config": {
            "channels": [8, 16, 16, 24, 32], "blocks": [0, 1, 1, 1, 1], "expansion": [2, 2, 2, 2, 2],
            "mamba_depth": 1, "d_state": 8,
        },
        "decoder_channels": [8, 8, 16, 16, 32],
    },
    "spacing": [3.0, 3.0, 3.0],
    # 64³ crops give the Mamba stage 4³ tokens of context; with 32³ (2³ tokens) the loss stayed at 1.0
    "roi": 64,
    "num_samples": 2,
    "batch": 2,
    "epochs": 600,
    "lr": 2e-3,
    "warmup_epochs": 5.0,
}  # fmt: skip

CARD_NOTE = (
    "DEMONSTRATION ONLY. Trained on a single abdominal CT (TotalSegmentator test fixture, Apache-2.0) "
    "whose labels are TotalSegmentator model output mapped to the 13 BTCV organs, not expert annotations; "
    "validated on that same scan, so the Dice values below are agreement on the training scan (memorised), "
    "not accuracy on any other scan. The esophagus is absent from the scan and was never learned. Use it to "
    "try the software, never for clinical or research conclusions."
)


def label_table(path: Path) -> list[dict]:
    names = json.loads((DATA / "labels_btcv13.json").read_text())
    table = [
        {"value": int(v), "name": n, "color": BTCV_COLORS[n]} for v, n in names.items() if int(v) > 0
    ]  # fmt: skip
    path.write_text(json.dumps(table, indent=1))
    return table


def earlier_layout_weights(source: Path, target: Path) -> Path:
    """Weights of a demo package built with our earlier HyMamba layout (skip blocks in the decoder, a
    MedNeXt block at level 0, a final LayerNorm after the Mamba stage), renamed where the published layout
    has the same tensor, as a warm start: ``--pretrained`` loads what fits and reports the rest."""
    from safetensors.torch import load_file, save_file

    renamed = {}
    for key, value in load_file(str(source)).items():
        if key.startswith(("encoder.stages.0.", "encoder.mamba.norm.")):
            continue  # not in the published network
        renamed[f"encoder.{key}" if key.startswith("skip_blocks.") else key] = value
    save_file(renamed, str(target))
    return target


def make_segmentation_demo(
    work: Path, target: Path, quick: bool, steps: int | None = None, init_from: Path | None = None
) -> dict:
    from mambamim.engine.finetune import make_config, run_finetune

    dataset = work / "dataset.json"
    dataset.write_text(
        json.dumps(
            {
                "name": "ct_abdomen (one scan)",
                "training": [
                    {"image": str(DATA / "ct.nii.gz"), "label": str(DATA / "ct_labels_btcv13.nii.gz")}
                ],
            }
        )
    )
    labels = work / "labels.json"
    label_table(labels)
    settings = dict(FINETUNE, epochs=2, val_every=2) if quick else FINETUNE
    if steps:
        settings = dict(settings, epochs=steps, val_every=steps)
    if init_from is not None:
        init = earlier_layout_weights(init_from, work / "init.safetensors")
        settings = dict(settings, pretrained=str(init))
    config = make_config(
        "paper",
        data=str(dataset),
        label_names=str(labels),
        package_name="btcv-hymamba-demo",
        training_data=(
            "One abdominal CT, 122x101x112 voxels at 3 mm (TotalSegmentator test data 'ct.nii.gz', "
            "Apache-2.0), with TotalSegmentator-generated labels mapped to BTCV's 13 organs. " + CARD_NOTE
        ),
        license="Apache-2.0 (weights); training scan Apache-2.0 (TotalSegmentator test data)",
        workers=0,
        **settings,
    )
    result = run_finetune(config, work / "finetune", show_bar=True, package_dir=target, overwrite=True)
    if result.status != "completed":
        raise KeyboardInterrupt
    card_path = target / "model.json"
    card = json.loads(card_path.read_text())
    card["description"] = (
        "Small HyMamba (MambaMIM paper architecture, channels 8-96) for 13 BTCV organs. " + CARD_NOTE
    )
    card["version"] = "0.4.0"  # 0.4.0: 0.3.0 + 1,000 steps; 0.3.0: published network
    card_path.write_text(json.dumps(card, indent=2) + "\n")  # the weights (and their hash) are unchanged
    return {"best_dice": result.best_dice, "dice": result.metrics.get("dice"), "steps": result.step}


def make_reconstruction_demo(work: Path, target: Path, quick: bool, steps: int | None = None) -> dict:
    from mambamim.checkpoint import load_checkpoint, save_checkpoint
    from mambamim.engine.pretrain import make_config, run_pretrain

    settings = dict(PRETRAIN, epochs=3) if quick else PRETRAIN
    if steps:
        settings = dict(settings, epochs=steps)
    config = make_config("paper", data=str(DATA / "ct.nii.gz"), workers=0, **settings)
    result = run_pretrain(config, work / "pretrain", show_bar=True)
    if result.status != "completed":
        raise KeyboardInterrupt
    full = load_checkpoint(work / "pretrain" / "last.pt", expected_format="mambamim-pretrain")
    # Ship only what inference needs: no optimiser state or RNG (a third of the size).
    slim = {key: full[key] for key in ("format", "format_version", "config", "model", "step", "epoch")}
    target.mkdir(parents=True, exist_ok=True)
    save_checkpoint(target / "mambamim-demo.pt", slim)
    shutil.copyfile(work / "pretrain" / "encoder.safetensors", target / "encoder.safetensors")
    (target / "README.md").write_text(
        "# mambamim-demo\n\n"
        "A tiny MambaMIM (HyMamba encoder, channels 8-32) pre-trained with `Training/make_demo_models.py` "
        f"for {result.step} steps on ONE CT scan (TotalSegmentator test data, Apache-2.0) at 3 mm with "
        f"{settings['roi']}³ crops and mask ratio 0.75. It exists to demonstrate `mambamim reconstruct` and "
        "the Slicer reconstruction view; its reconstructions are coarse and it is no useful initialisation "
        "for real fine-tuning. Final training loss (per-patch normalised MSE on masked voxels, where 1.0 is "
        f"what predicting each patch's mean scores): {result.last_loss:.3f}.\n\n"
        "- `mambamim-demo.pt`: weights-only checkpoint (`format: mambamim-pretrain`), for "
        "`mambamim reconstruct --checkpoint`.\n"
        "- `encoder.safetensors`: its encoder under `encoder.*`, for `mambamim finetune --pretrained`.\n"
    )
    return {"last_loss": result.last_loss, "steps": result.step}


def refresh_registry_hashes(models_dir: Path) -> None:
    """Point the SHA-256 of the shipped entries of ``Resources/models.json`` at the files just built."""
    from mambamim.infer.package import sha256_file

    registry_path = ROOT / "Resources" / "models.json"
    if models_dir.resolve() != (ROOT / "Resources" / "models").resolve() or not registry_path.is_file():
        return
    files = {
        "btcv-hymamba-demo": models_dir / "btcv-hymamba-demo" / "weights.safetensors",
        "mambamim-demo": models_dir / "mambamim-demo" / "mambamim-demo.pt",
    }
    registry = json.loads(registry_path.read_text())
    for entry in registry["models"]:
        path = files.get(entry["id"])
        if path is not None and path.is_file():
            entry["sha256"] = sha256_file(path)
    registry_path.write_text(json.dumps(registry, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    from mambamim.cpu_memory import use_huge_pages

    use_huge_pages()  # as the command line does, before torch is imported
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "Resources" / "models", help="models folder")
    parser.add_argument("--quick", action="store_true", help="a few steps each, into a temporary folder")
    parser.add_argument("--only", choices=("segmentation", "reconstruction"), help="build one of the two")
    parser.add_argument("--finetune-steps", type=int, help=f"default {FINETUNE['epochs']}")
    parser.add_argument("--init-from", type=Path,
                        help="warm start: weights.safetensors of an earlier segmentation demo package")
    parser.add_argument("--pretrain-steps", type=int, help=f"default {PRETRAIN['epochs']}")
    args = parser.parse_args(argv)
    if not (DATA / "ct.nii.gz").is_file():
        print(f"error: sample CT not found at {DATA}", file=sys.stderr)
        return 1
    out = Path(tempfile.mkdtemp(prefix="demo-models-")) if args.quick else args.out
    summary = {}
    with tempfile.TemporaryDirectory(prefix="make-demo-") as tmp:
        # Ctrl-C: the training loop stops after its current step and the models already built stay.
        work = Path(tmp)
        if args.only in (None, "segmentation"):
            start = time.process_time()
            summary["btcv-hymamba-demo"] = make_segmentation_demo(
                work, out / "btcv-hymamba-demo", args.quick, args.finetune_steps, args.init_from
            )
            summary["btcv-hymamba-demo"]["cpu_s"] = round(time.process_time() - start, 1)
        if args.only in (None, "reconstruction"):
            start = time.process_time()
            summary["mambamim-demo"] = make_reconstruction_demo(
                work, out / "mambamim-demo", args.quick, args.pretrain_steps
            )
            summary["mambamim-demo"]["cpu_s"] = round(time.process_time() - start, 1)
    if not args.quick:
        refresh_registry_hashes(out)
    print(json.dumps({"out": str(out), **summary}, indent=2))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; the models built so far are kept", file=sys.stderr)
        sys.exit(130)
