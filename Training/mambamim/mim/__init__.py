"""MambaMIM self-supervised pre-training (arXiv 2408.08070): masking, sparse HyMamba encoder, TOKI,
reconstruction decoder, loss, the :class:`~mambamim.mim.model.MambaMIM` model and reconstruction of
masked scans (``mambamim reconstruct``)."""
