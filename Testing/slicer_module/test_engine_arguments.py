"""The module's engine command lines speak the engine's current CLI dialect (no deprecated spelling).

The logic builds each command line in one place (``startSegmentation`` / ``startReconstruction``);
here the command is captured instead of started and parsed by the engine's own parser, in the
engine's Python, as the child process would."""

from __future__ import annotations

import json
import subprocess

import pytest
from conftest import ENGINE_PYTHON

PARSE = """
import json, sys
from mambamim.cli import build_parser
args = build_parser().parse_args(sys.argv[1:])
print(json.dumps({k: str(v) for k, v in vars(args).items() if not k.startswith("_")}))
"""


class Captured(Exception):
    pass


def capture(logic, monkeypatch) -> list:
    commands = []

    def start(command):
        commands.append([str(part) for part in command])
        raise Captured

    monkeypatch.setattr(logic, "_start", start)
    return commands


def engine_parse(command: list[str]) -> tuple[dict, str]:
    assert command[1:3] == ["-m", "mambamim"]
    argv = [ENGINE_PYTHON, "-c", PARSE, *command[3:]]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout), proc.stderr


def test_segment_and_reconstruct_commands_parse_without_deprecation(
    logic, small_ct_node, demo_package, tmp_path, monkeypatch
):
    commands = capture(logic, monkeypatch)
    with pytest.raises(Captured):
        logic.startSegmentation(small_ct_node, demo_package, device="cpu", fast=True, overlap=0.25)
    checkpoint = tmp_path / "last.pt"
    checkpoint.write_bytes(b"")
    with pytest.raises(Captured):
        logic.startReconstruction(small_ct_node, checkpoint, maskRatio=0.6, seed=2, device="cpu")
    segment, reconstruct = commands
    args, err = engine_parse(segment)
    assert "deprecated" not in err
    assert args["command"] == "segment" and args["fast"] == "True" and args["overlap"] == "0.25"
    assert args["progress"] == "json" and args["model"] == str([demo_package])
    args, err = engine_parse(reconstruct)
    assert "deprecated" not in err
    assert args["command"] == "reconstruct" and args["mask_ratio"] == "0.6" and args["format"] == "nrrd"
