"""One CLI dialect: `--help` shows defaults and an example, old spellings still work with a notice."""

from __future__ import annotations

import argparse
import json
import shlex

import pytest
from mambamim.cli import COMMANDS, build_parser
from mambamim.commands.examples import EXAMPLES

PKG = ["package", "--checkpoint", "c", "--out", "o"]
SEG = ["segment", "--input", "a", "--output", "b"]


def parse(argv: list[str]):
    return build_parser().parse_args(argv)


@pytest.mark.parametrize("command", COMMANDS)
def test_help_shows_defaults_and_an_example_that_parses(command, capsys):
    with pytest.raises(SystemExit) as done:
        parse([command, "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert "example:\n  mambamim " + command in text
    subparser = next(a for a in build_parser()._actions if a.dest == "command").choices[command]
    formatter = subparser._get_formatter()
    for action in subparser._actions:  # every option with a value to show says its default
        if action.option_strings and action.default not in (None, False, argparse.SUPPRESS):
            if action.help != argparse.SUPPRESS:
                assert "default" in formatter._get_help_string(action), (command, action.option_strings)
    argv = shlex.split(EXAMPLES[command])
    assert argv[:2] == ["mambamim", command]
    args = parse(argv[1:])  # every example is a valid command line
    assert args.command == command
    assert "deprecated" not in capsys.readouterr().err  # examples use the current spellings


def test_defaults_are_printed_after_the_help_text(capsys):
    with pytest.raises(SystemExit):
        parse(["segment", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: bar)" in text  # --progress
    assert "(default: nii.gz)" in text  # --format
    assert "8x the inference time" in text  # --tta states its cost
    for old in ("--sw-batch ", "--sw-batch=", "--crop-size"):
        assert old not in text  # old spellings are hidden


@pytest.mark.parametrize(
    ("argv", "dest", "value", "notice"),
    [
        (["finetune", "-o", "x", "--sw-batch", "3"], "sw_batch", 3, "--sw-batch is deprecated"),
        (["finetune", "-o", "x", "--sw-batch-size", "3"], "sw_batch", 3, None),
        (["finetune", "-o", "x", "--crop-size", "48"], "roi", 48, "--crop-size is deprecated"),
        (["pretrain", "-o", "x", "--crop-size", "48"], "roi", 48, "--crop-size is deprecated"),
        (["pretrain", "-o", "x", "--roi-size", "48"], "roi", 48, None),
        ([*SEG, "--sw-batch", "2"], "sw_batch_size", 2, "--sw-batch is"),
        ([*PKG, "--spacing", "1", "2", "3"], "spacing", [1.0, 2.0, 3.0],
         "--spacing X Y Z is deprecated"),
        ([*PKG, "--spacing", "1,2,3"], "spacing", [1.0, 2.0, 3.0], None),
        ([*PKG, "--spacing", "1.5"], "spacing", [1.5] * 3, None),
        ([*PKG, "--roi-size", "96", "96", "64"], "roi_size", [96, 96, 64],
         "--roi-size X Y Z is deprecated"),
        ([*PKG, "--roi-size", "96,96,64"], "roi_size", [96, 96, 64], None),
        ([*PKG, "--intensity", "mr"], "intensity", {"type": "zscore"},
         "--intensity mr is deprecated"),
        ([*PKG, "--intensity", '{"type": "window", "lower": -100, "upper": 200}'], "intensity",
         {"type": "window", "lower": -100.0, "upper": 200.0}, "as JSON is deprecated"),
        ([*PKG, "--intensity", "window:-100:200"], "intensity",
         {"type": "window", "lower": -100.0, "upper": 200.0}, None),
        (["finetune", "-o", "x", "--intensity", "clip_zscore:-1000:1000:50:200"], "intensity",
         {"type": "clip_zscore", "lower": -1000.0, "upper": 1000.0, "mean": 50.0, "std": 200.0}, None),
    ],
)  # fmt: skip
def test_one_spelling_per_option_old_ones_with_a_one_line_notice(argv, dest, value, notice, capsys):
    args = parse(argv)
    assert getattr(args, dest) == value
    err = capsys.readouterr().err
    if notice is None:
        assert err == ""
    else:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and notice in lines[0] and "next release" in lines[0]


@pytest.mark.parametrize(
    "argv",
    [
        [*PKG, "--spacing", "1", "2"],
        [*PKG, "--spacing", "0"],
        [*PKG, "--roi-size", "96,x,96"],
        [*PKG, "--intensity", "hounsfield"],
        ["finetune", "-o", "x", "--crop-size", "big"],
        ["finetune", "-o", "x", "--intensity", "window:200:100"],
    ],
)
def test_bad_values_are_usage_errors_naming_the_option(argv, capsys):
    with pytest.raises(SystemExit) as done:
        parse(argv)
    assert done.value.code == 2
    err = capsys.readouterr().err
    option = next(a for a in reversed(argv) if a.startswith("--"))
    assert option in err


def test_package_json_intensity_file_still_works(tmp_path, capsys):
    spec = tmp_path / "intensity.json"
    spec.write_text(json.dumps({"type": "zscore"}))
    args = parse([*PKG, "--intensity", str(spec)])
    assert args.intensity == {"type": "zscore"} and "deprecated" in capsys.readouterr().err
