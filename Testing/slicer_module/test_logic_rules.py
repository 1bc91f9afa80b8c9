"""The module's rules that live in the library: the engine's modality rule, one node per volume, the
card's overlap, the cache folder, reconstruction clean-up, and finding the engine's Python."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest import ijkToRasOf, volumeArray
from MambaMIMSegmenterLib import InputError
from MambaMIMSegmenterLib.logic import OverlapChoice
from MambaMIMSegmenterLib.runner import EngineError, pythonExecutable

ROOT = Path(__file__).resolve().parents[2]


def test_modality_uses_the_engine_rule_and_the_engine_checks_again(
    monkeypatch, logic, small_ct_node, demo_package
):
    import mambamim.infer.modality as rule

    job = logic.segment(small_ct_node, demo_package, "cpu", waitForCompletion=False)
    try:
        command = job.runner.command
        assert command[command.index("--modality") + 1] == "CT", "the engine gets the modality to check"
        assert "--overlap" not in command, "without a user choice the card's overlap is used"
    finally:
        job.cancel()
    # One rule: change the engine's threshold and the module follows it.
    monkeypatch.setattr(rule, "CT_LOW_VALUE", -5000.0)
    with pytest.raises(InputError, match=r'Model "[^"]+" is for CT images, but "ct small" looks like MR'):
        logic.segment(small_ct_node, demo_package, "cpu")
    small_ct_node.SetAttribute("DICOM.Modality", "CT")  # a tag wins over intensities, as in the engine
    job = logic.segment(small_ct_node, demo_package, "cpu", waitForCompletion=False)
    job.cancel()


def test_modality_check_turned_off_reaches_the_engine(monkeypatch, logic, small_ct_node, demo_package):
    import mambamim.infer.modality as rule

    monkeypatch.setattr(rule, "CT_LOW_VALUE", -5000.0)  # the volume now looks like MR to the rule
    job = logic.segment(small_ct_node, demo_package, "cpu", waitForCompletion=False, checkModality=False)
    try:
        command = job.runner.command
        assert "--allow-other-modality" in command, "otherwise the engine refuses what the user allowed"
        assert "--modality" not in command
    finally:
        job.cancel()


def test_engine_refuses_a_declared_other_modality():
    from mambamim.infer.modality import ModalityMismatch, check_modality, guess_modality

    with pytest.raises(ModalityMismatch, match="is for CT images"):
        check_modality("CT", "MR", "pkg")
    check_modality("CT", "ct", "pkg")
    assert guess_modality([0, 10, 20], "MRI") == "MR"
    assert guess_modality([-1000, 0, 40] * 100) == "CT"


def test_a_new_volume_gets_a_new_segmentation(app, logic, small_ct_node, demo_package):
    first = logic.segment(small_ct_node, demo_package, "cpu", fast=True)
    other = app.addVolumeFromArray(volumeArray(small_ct_node).copy(), _ijk(small_ct_node), "other ct")
    second = logic.segment(other, demo_package, "cpu", fast=True)
    assert second is not first
    assert first.GetNodeReferenceID("referenceImageGeometryRef") == small_ct_node.GetID()
    assert second.GetNodeReferenceID("referenceImageGeometryRef") == other.GetID()
    assert (first.GetName(), second.GetName()) == ("ct small segmentation", "other ct segmentation")
    again = logic.segment(small_ct_node, demo_package, "cpu", fast=True)
    assert again.GetName() != first.GetName(), "names stay unique"


def _ijk(node):
    return ijkToRasOf(node)


def test_overlap_is_the_cards_until_the_user_changes_it(logic, demo_package):
    entry = logic.registry.get("btcv-hymamba-demo")
    assert logic.modelOverlap(entry) == 0.5  # from the shipped card
    choice = OverlapChoice()
    choice.modelSelected(logic.modelOverlap(entry))
    assert choice.argument is None
    choice.userChanged(0.25)
    assert choice.argument == 0.25
    choice.modelSelected(0.5)
    assert choice.argument is None


def test_changing_the_cache_folder_does_not_rehash(monkeypatch, logic, tmp_path):
    import MambaMIMSegmenterLib.registry as registry_module

    entry = logic.registry.get("btcv-hymamba-demo")
    assert logic.registry.localPath(entry) is not None
    calls = []
    monkeypatch.setattr(registry_module, "verifySha256", lambda *a: calls.append(a))
    for folder in ("c", "ca", "cac", "cache2"):  # what typing a path would do
        assert logic.setCacheDir(tmp_path / folder)
        assert logic.registry.localPath(entry) is not None
    assert not logic.setCacheDir(tmp_path / "cache2")
    assert calls == []


def test_a_failure_while_showing_the_reconstruction_leaves_no_volume(
    monkeypatch, app, logic, small_ct_node, mim_checkpoint
):
    before = app.nodeIds()

    def broken(*args, **kwargs):
        raise RuntimeError("the layout could not be built")

    monkeypatch.setattr(logic.comparisonLayout, "show", broken)
    with pytest.raises(RuntimeError, match="layout"):
        logic.reconstruct(small_ct_node, mim_checkpoint, maskRatio=0.5, device="cpu")
    assert app.nodeIds() == before


def test_empty_sys_executable_gives_the_engine_error(monkeypatch):
    monkeypatch.setattr(sys, "executable", "")
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(EngineError, match="cannot find PythonSlicer"):
        pythonExecutable()
