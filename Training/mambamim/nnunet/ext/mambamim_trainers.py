"""Re-exports the MambaMIM trainers under their class names, for nnU-Net's ``nnUNet_extTrainer`` lookup.

nnU-Net imports the modules of that folder as top-level modules and drops them again after the lookup,
so this file only imports from the installed package (never relatively).
"""

from mambamim.nnunet.trainers import *  # noqa: F403
from mambamim.nnunet.trainers import __all__  # noqa: F401
