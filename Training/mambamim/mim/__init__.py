"""MambaMIM self-supervised pre-training (arXiv 2408.08070): masking, sparse HyMamba encoder, TOKI,
reconstruction decoder, loss and the :class:`~mambamim.mim.model.MambaMIM` model; reconstructing a
scan file (``mambamim reconstruct``) is :mod:`mambamim.infer.reconstruct`."""
