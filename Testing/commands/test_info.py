"""`mambamim info`: versions, devices and the scan / conv backends with reasons, as text and JSON."""

from __future__ import annotations

import argparse
import json

import torch
from mambamim.commands import info
from mambamim.ops import ENV_VAR


def run_info(argv, capsys) -> tuple[int, str]:
    parser = argparse.ArgumentParser()
    info.add_arguments(parser)
    code = info.run(parser.parse_args(argv))
    return code, capsys.readouterr().out


def test_json_output_has_versions_devices_backends(capsys, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    code, out = run_info(["--json"], capsys)
    assert code == 0
    data = json.loads(out)
    assert data["versions"]["torch"] == torch.__version__
    assert set(data["versions"]) == {"mambamim", "python", "torch", "monai", "numpy"}
    assert data["devices"]["cpu_threads"] >= 1
    assert isinstance(data["devices"]["cuda"], list) and isinstance(data["devices"]["mps"], bool)
    assert len(data["devices"]["cuda"]) == torch.cuda.device_count()
    assert isinstance(data["huge_pages"]["requested"], bool) and data["huge_pages"]["kernel"]
    for op in ("selective_scan", "causal_conv1d"):
        assert data["backends"][op]["on_cpu"] == "torch"
        assert data["backends"][op]["reason"]
    assert "mamba-ssm" in data["optional_packages"]
    assert data["optional_packages"]["safetensors"]  # a base dependency, so installed


def test_text_output_explains_forced_backend(capsys, monkeypatch):
    monkeypatch.setenv(ENV_VAR, "torch")
    code, out = run_info([], capsys)
    assert code == 0
    assert f"torch      {torch.__version__}" in out
    assert f"{ENV_VAR}=torch" in out and "forced by" in out
    assert "selective_scan  active: torch" in out
    assert "Optional packages:" in out


def test_invalid_backend_setting_is_reported_not_crashing(capsys, monkeypatch):
    monkeypatch.setenv(ENV_VAR, "gpu")
    code, out = run_info([], capsys)
    assert code == 0 and "valid values: auto, cuda, triton, torch" in out


def test_registered_in_the_cli(capsys):
    from mambamim.cli import main

    assert main(["info", "--json"]) == 0
    assert "backends" in json.loads(capsys.readouterr().out)
