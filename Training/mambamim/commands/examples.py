"""One example per sub-command, shown at the end of its ``--help`` (tests parse each with the CLI)."""

from __future__ import annotations

EXAMPLES = {
    "info": "mambamim info --json",
    "pretrain": "mambamim pretrain scans/ -o runs/pretrain --preset tiny --spacing 3 --epochs 2",
    "finetune": "mambamim finetune Task09_Spleen/dataset.json -o runs/spleen --preset tiny "
    "--pretrained runs/pretrain/encoder.safetensors",
    "crossval": "mambamim crossval Dataset001_Liver -o runs/liver_cv --folds 5 --preset tiny",
    "evaluate": "mambamim evaluate --pred predictions/ --ref labelsTs/ --out dice.csv",
    "package": "mambamim package --checkpoint runs/spleen/best.pt --out spleen-hymamba "
    "--spacing 1.5 --intensity ct --roi-size 96",
    "segment": "mambamim segment --input ct.nii.gz --output ct_seg.nii.gz --model fold0 --model fold1 "
    "--save-probabilities",
    "reconstruct": "mambamim reconstruct --checkpoint runs/pretrain/last.pt --input ct.nii.gz "
    "--output-dir recon",
    "convert": "mambamim convert MambaMIM.pth --from mambamim -o hymamba.safetensors",
    "web": "mambamim web --port 8080 --data-dir scans/",
}


def epilog(command: str) -> str:
    return f"example:\n  {EXAMPLES[command]}"
