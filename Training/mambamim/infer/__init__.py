"""Inference engine: read volumes, model packages, model-space geometry, sliding window, segment, evaluate.

Modules (imported explicitly; nothing heavy is imported here): ``io`` (read/write volumes),
``preprocess`` (input grid <-> model space), ``sliding_window``, ``postprocess``, ``memory``
(estimate before a run), ``package`` (model packages and cards), ``progress`` (events, cancellation,
JSON lines), ``segment`` (one volume), ``batch`` (a folder), ``evaluate`` (Dice / HD95).
"""
