"""MambaMIM pre-training: ``python Training/pretrain.py DATA -o OUT [options]`` (= ``mambamim pretrain``).

Also runs as ``Slicer --python-script Training/pretrain.py DATA -o OUT``: arguments after the script are
parsed, nothing Qt is imported, and the exit status is the command's (0 done, 1 error, 130 interrupted).
For several GPUs: ``torchrun --nproc_per_node=N Training/pretrain.py ...``.
"""

import sys
from pathlib import Path

# Importable without `pip install` (e.g. from Slicer's Python): the package sits next to this script.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from mambamim.cli import main

if __name__ == "__main__":
    sys.exit(main(["pretrain", *sys.argv[1:]]))
