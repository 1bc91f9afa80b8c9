"""nnU-Net v2 integration: trainers building our networks from nnU-Net's plans (optional extra ``[nnunet]``).

Only this subpackage imports ``nnunetv2``. nnU-Net v2 finds a trainer by class name, first in its own
``nnunetv2.training.nnUNetTrainer`` package, then in the folders listed in the environment variable
``nnUNet_extTrainer`` (nnU-Net >= 2.8, ``nnunetv2/utilities/find_objects.py``). :func:`trainers_path`
is the folder to put there::

    export nnUNet_extTrainer="$(python -m mambamim.nnunet path)"
    nnUNetv2_train DATASET 3d_fullres 0 -tr nnUNetTrainerHyMamba

Modules: :mod:`.networks` (plans -> network, no nnU-Net import), :mod:`.trainers` (the trainer classes),
:mod:`.package` (a trained nnU-Net model folder -> our model package).
"""

from __future__ import annotations

from pathlib import Path


def trainers_path() -> Path:
    """The folder to list in ``nnUNet_extTrainer``: it holds one module that re-exports our trainers."""
    return Path(__file__).resolve().parent / "ext"
