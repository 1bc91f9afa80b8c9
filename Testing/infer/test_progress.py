"""Progress API and the JSON-lines protocol that GUIs (the Slicer module) parse."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest
from infer_helpers import make_threshold_package, register_threshold_model
from mambamim.data.imageio import read_image, write_image
from mambamim.infer.progress import (
    Cancelled,
    CancelToken,
    ProgressEvent,
    ProgressTracker,
    make_reporter,
    run_command,
)

KEYS = {"stage", "fraction", "eta_s", "message"}


def parse_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_event_json_format():
    line = ProgressEvent("inference", 0.123456, float("nan"), "window 3/9").to_json()
    assert json.loads(line) == {
        "stage": "inference",
        "fraction": 0.1235,
        "eta_s": None,
        "message": "window 3/9",
    }
    done = json.loads(ProgressEvent("done", 1.0, 0.0, "finished", outputs={"labels": "/x.nii.gz"}).to_json())
    assert done["outputs"] == {"labels": "/x.nii.gz"} and set(done) == KEYS | {"outputs"}
    assert json.loads(ProgressEvent("preprocess", 1.7, -3.0).to_json())["fraction"] == 1.0  # clamped


def test_json_reporter_writes_one_flushed_line_per_event():
    stream = io.StringIO()
    report = make_reporter("json", stream)
    report(ProgressEvent("load", 0.0))
    report(ProgressEvent("inference", 0.5, 10.0, "window 1/2"))
    lines = parse_lines(stream.getvalue())
    assert [line["stage"] for line in lines] == ["load", "inference"] and all(set(x) == KEYS for x in lines)
    with pytest.raises(ValueError, match="json, bar, none"):
        make_reporter("xml")


def test_tracker_is_monotonic_and_estimates_eta():
    events = []
    tracker = ProgressTracker(events.append, {"a": 1.0, "b": 3.0})
    tracker.update("a", 1.0)
    tracker.update("b", 0.5)
    tracker.update("a", 0.0)  # a late message from an earlier stage never moves the bar back
    assert [round(e.fraction, 3) for e in events] == [0.25, 0.625, 0.625]
    assert events[1].eta_s is not None and events[1].eta_s >= 0


def test_cancel_token():
    token = CancelToken()
    token.raise_if_cancelled()
    token.cancel()
    assert token.cancelled
    with pytest.raises(Cancelled):
        token.raise_if_cancelled()


@pytest.mark.parametrize(
    ("work", "code", "last"),
    [
        (lambda report, cancel: {"labels": "out.nrrd"}, 0, "done"),
        (lambda report, cancel: (_ for _ in ()).throw(ValueError("input x.nii is 2-D")), 1, "error"),
        (lambda report, cancel: (cancel.cancel(), cancel.raise_if_cancelled()), 130, "cancelled"),
    ],
)
def test_run_command_ends_with_a_terminal_event(capsys, work, code, last):
    assert run_command("json", work) == code
    lines = parse_lines(capsys.readouterr().out)
    assert lines[-1]["stage"] == last
    if last == "done":
        assert lines[-1]["outputs"] == {"labels": "out.nrrd"}
    if last == "error":
        assert lines[-1]["message"] == "input x.nii is 2-D"


def test_segment_json_progress_stream(sample_ct, tmp_path, monkeypatch, capsys):
    from mambamim.commands import segment as command

    register_threshold_model(monkeypatch)
    pkg = make_threshold_package(tmp_path / "pkg", spacing=(6.0, 6.0, 6.0))
    small = write_image(read_image(sample_ct)[::2, ::2, ::2], tmp_path / "ct.nrrd")
    out = tmp_path / "labels.nii.gz"
    import argparse

    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    args = parser.parse_args(
        [
            "--model",
            str(pkg),
            "--input",
            str(small),
            "--output",
            str(out),
            "--device",
            "cpu",
            "--progress",
            "json",
        ]
    )
    assert command.run(args) == 0
    lines = parse_lines(capsys.readouterr().out)  # stdout holds nothing but JSON lines
    assert all(set(line) - {"outputs"} == KEYS for line in lines)
    fractions = [line["fraction"] for line in lines]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    stages = [line["stage"] for line in lines]
    assert stages[0] == "load" and stages[-1] == "done" and "inference" in stages and "write" in stages
    assert sum(line["message"].startswith("window") for line in lines) >= 2  # one line per window
    # the label map and, by default, its Slicer .seg.nrrd copy beside it
    seg_nrrd = out.parent / "labels.seg.nrrd"
    assert lines[-1]["outputs"] == {"labels": str(out), "seg_nrrd": str(seg_nrrd)}
    assert out.exists() and seg_nrrd.exists()


def test_cli_child_process_reports_errors_as_json(tmp_path):
    """What the Slicer module sees: a child process whose last stdout line is an error event."""
    missing = tmp_path / "nope.nii.gz"
    code = (
        "import sys; from mambamim.commands import segment; import argparse; p = argparse.ArgumentParser(); "
        "segment.add_arguments(p); sys.exit(segment.run(p.parse_args(sys.argv[1:])))"
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            "--model",
            str(tmp_path),
            "--input",
            str(missing),
            "--output",
            str(tmp_path / "o.nii.gz"),
            "--progress",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    last = parse_lines(proc.stdout)[-1]
    assert last["stage"] == "error" and "nope.nii.gz" in last["message"]
