"""Folder listed in nnU-Net's ``nnUNet_extTrainer``; nnU-Net imports its modules as top-level modules."""
