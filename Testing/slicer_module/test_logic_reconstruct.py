"""Masked-input reconstruction through the real child process `mambamim reconstruct`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import slicer
from conftest import ijkToRasOf, volumeArray
from MambaMIMSegmenterLib import EngineCancelled, InputError

ROOT = Path(__file__).resolve().parents[2]



def test_reconstruction_creates_both_volumes_on_the_input_grid(
    app, logic, small_ct_node, mim_checkpoint, tmp_path
):
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(app.scene)
    study = sh.CreateStudyItem(sh.CreateSubjectItem(sh.GetSceneItemID(), "P"), "S")
    sh.SetItemParent(sh.GetItemByDataNode(small_ct_node) or sh.CreateItem(study, small_ct_node), study)
    transform = app.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "registration")
    small_ct_node.SetAndObserveTransformNodeID(transform.GetID())
    before = app.nodeIds()
    masked, reconstruction = logic.reconstruct(
        small_ct_node, mim_checkpoint, maskRatio=0.5, seed=3, device="cpu"
    )
    assert masked.GetName() == "ct small masked input"
    assert reconstruction.GetName() == "ct small reconstruction"
    input_array = volumeArray(small_ct_node)
    for node in (masked, reconstruction):
        assert node.GetScene() is app.scene and node.GetID() not in before
        assert node.GetImageData().GetDimensions() == small_ct_node.GetImageData().GetDimensions()
        assert np.allclose(ijkToRasOf(node), ijkToRasOf(small_ct_node), atol=1e-5)
        assert sh.GetItemParent(sh.GetItemByDataNode(node)) == study
        assert node.GetTransformNodeID() == transform.GetID()
        assert np.isfinite(volumeArray(node)).all()
    # The masked input really hides part of the scan, and the reconstruction differs from it there.
    masked_array, recon_array = volumeArray(masked), volumeArray(reconstruction)
    changed = ~np.isclose(masked_array, input_array, atol=1.0)
    assert 0.2 < changed.mean() < 0.95
    assert not np.allclose(recon_array[changed], masked_array[changed])
    assert not any((tmp_path / "tmp").iterdir())


def test_reconstruction_refuses_bad_settings_and_cancels_cleanly(
    app, logic, small_ct_node, mim_checkpoint, tmp_path
):
    before = app.nodeIds()
    with pytest.raises(InputError, match=r"mask ratio must be between 0\.25 and 0\.9"):
        logic.reconstruct(small_ct_node, mim_checkpoint, maskRatio=0.95)
    with pytest.raises(InputError, match="No input volume"):
        logic.reconstruct(None, mim_checkpoint)
    with pytest.raises(InputError, match="does not exist"):
        logic.reconstruct(small_ct_node, tmp_path / "missing.pt")
    job = logic.reconstruct(small_ct_node, mim_checkpoint, device="cpu", waitForCompletion=False)
    job.cancel()
    with pytest.raises(EngineCancelled):
        job.wait()
    assert app.nodeIds() == before
    assert not job.workDir.exists()
