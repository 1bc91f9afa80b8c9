"""Fine-tuning: ``python Training/finetune.py dataset.json -o OUT [options]`` (= ``mambamim finetune``).

Also runs as ``Slicer --python-script Training/finetune.py dataset.json -o OUT``: arguments after the
script are parsed, nothing Qt is imported, and the exit status is the command's (0 done, 1 error,
130 interrupted).
For several GPUs: ``torchrun --nproc_per_node=N Training/finetune.py ...``.
"""

import sys
from pathlib import Path

# Importable without `pip install` (e.g. from Slicer's Python): the package sits next to this script.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from mambamim.cli import main

if __name__ == "__main__":
    sys.exit(main(["finetune", *sys.argv[1:]]))
