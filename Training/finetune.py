"""Fine-tuning: ``python Training/finetune.py dataset.json -o OUT [options]`` (= ``mambamim finetune``).

Headless in Slicer (5.10+):
``Slicer --no-main-window --python-script Training/finetune.py -- dataset.json -o OUT``.
Arguments after ``--`` are the script's (without it, Slicer itself consumes options such as
``--help``); nothing Qt is imported. Every path ends with an exit status, so Slicer always exits:
0 done, 1 error, 2 bad arguments, 130 interrupted.
For several GPUs: ``torchrun --nproc_per_node=N Training/finetune.py ...``.
"""

import sys
from pathlib import Path

# Importable without `pip install` (e.g. from Slicer's Python): the package sits next to this script.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from mambamim.entry import run_script

if __name__ == "__main__":
    run_script("finetune")
