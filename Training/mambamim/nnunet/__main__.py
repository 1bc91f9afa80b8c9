"""``python -m mambamim.nnunet path``: print the folder to put in nnU-Net's ``nnUNet_extTrainer``."""

from __future__ import annotations

import sys

from mambamim.nnunet import trainers_path


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args != ["path"]:
        print("usage: python -m mambamim.nnunet path   (the folder for nnU-Net's nnUNet_extTrainer)",
              file=sys.stderr)
        return 2
    print(trainers_path())
    return 0


if __name__ == "__main__":
    sys.exit(main())
