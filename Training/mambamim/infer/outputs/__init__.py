"""Results beyond the label map: Slicer ``.seg.nrrd``, DICOM SEG, per-organ statistics and a preview PNG.

Modules (imported explicitly): ``terminology`` (a card label's coded meaning), ``seg_nrrd``,
``dicom_seg``, ``statistics``, ``preview``, and ``companions`` (which of these ``segment`` writes, where,
checked before the run).
"""
