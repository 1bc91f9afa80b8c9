"""Inference engine: model packages, model-space geometry, sliding window, segment, reconstruct, evaluate.

Modules (imported explicitly; nothing heavy is imported here): ``preprocess`` (input grid <-> model
space), ``sliding_window``, ``postprocess``, ``memory`` (estimate before a run), ``package`` (model
packages and cards), ``progress`` (events, cancellation, JSON lines), ``segment`` (one volume), ``batch``
(a folder), ``evaluate`` (Dice / HD95), ``reconstruct`` and ``recon_figure`` (a scan masked and
reconstructed by a pre-trained MambaMIM), ``convert`` (the authors' checkpoints). Volumes are read and
written by :mod:`mambamim.data.imageio`.
"""
