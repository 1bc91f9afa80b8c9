"""load_partial_state_dict: loads what fits, reports missing / unexpected / shape-mismatched keys."""

from __future__ import annotations

import pytest
import torch
from mambamim.nn.state_dict import LoadReport, load_partial_state_dict
from torch import nn


def make_model() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3), nn.BatchNorm1d(3))


def test_partial_load_reports_every_category_and_loads_only_matches():
    model = make_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    source = {k: torch.full_like(v, 7) for k, v in make_model().state_dict().items()}
    del source["0.bias"]
    source["2.weight"] = torch.zeros(5, 8)  # wrong shape
    source["extra.weight"] = torch.zeros(2)
    report = load_partial_state_dict(model, source)
    assert isinstance(report, LoadReport)
    assert report.missing == ["0.bias"]
    assert report.unexpected == ["extra.weight"]
    assert report.shape_mismatched == ["2.weight"]
    assert report.shapes["2.weight"] == ((5, 8), (3, 8))
    assert set(report.matched) == set(before) - {"0.bias", "2.weight"}
    state = model.state_dict()
    assert torch.equal(state["0.bias"], before["0.bias"])
    assert torch.equal(state["2.weight"], before["2.weight"])  # mismatched shapes are never loaded
    for key in report.matched:
        assert torch.all(state[key] == 7), key
    summary = report.summary()
    assert f"loaded {len(report.matched)}/{len(before)} model tensors" in summary
    assert "1 missing" in summary and "extra.weight" in summary
    assert "2.weight checkpoint [5, 8] vs model [3, 8]" in summary


def test_summary_abbreviates_long_lists():
    model = nn.Linear(2, 2)
    source = {f"junk.{i}": torch.zeros(1) for i in range(30)}
    summary = load_partial_state_dict(model, source).summary(max_keys=3)
    assert "30 unexpected" in summary and "(27 more)" in summary and "2 missing" in summary


def test_full_match_is_exact():
    model, source = make_model(), make_model()
    report = load_partial_state_dict(model, source.state_dict())
    assert not (report.missing or report.unexpected or report.shape_mismatched)
    assert report.summary().startswith(f"loaded {len(report.matched)}/{len(report.matched)}")
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value)


def test_bad_state_dict_is_a_clear_error():
    with pytest.raises(TypeError, match="state_dict must be a mapping"):
        load_partial_state_dict(nn.Linear(2, 2), [torch.zeros(2)])
    with pytest.raises(TypeError, match="not tensors: weight"):
        load_partial_state_dict(nn.Linear(2, 2), {"weight": [[1.0, 2.0]]})
