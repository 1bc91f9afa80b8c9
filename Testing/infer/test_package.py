"""Model packages: round trip, SHA-256 and architecture verification, .zip archives, card validation."""

from __future__ import annotations

import argparse
import json
import zipfile

import pytest
import torch
from mambamim.data.intensity import CT_WINDOW
from mambamim.data.labels import parse_labels
from mambamim.infer.card import CARD_FILE, PackageError
from mambamim.infer.package import (
    WEIGHTS_FILE,
    load_package,
    make_card,
    read_card,
    save_package,
    write_zip,
)
from mambamim.nn import build_model

TINY = {"out_channels": 3, "channels": (4, 8, 8, 8, 16), "blocks": (1, 1, 1, 1, 1), "mamba_depth": 1}


@pytest.fixture(scope="module")
def tiny_state():
    return build_model("hymamba", **TINY).state_dict()


def card(**overrides):
    fields = dict(
        name="tiny",
        labels={"0": "background", "1": "spleen", "2": "liver"},
        modality="CT",
        spacing=(1.5, 1.5, 1.5),
        intensity=CT_WINDOW,
        roi_size=(32, 32, 32),
        license="Apache-2.0",
        training_data="random weights",
        metrics={"dice_mean": 0.0},
    )
    fields.update(overrides)
    return make_card(**fields)


@pytest.fixture
def package(tmp_path, tiny_state):
    return save_package(
        tmp_path / "pkg", model_name="hymamba", model_config=TINY, state_dict=tiny_state, card=card()
    )


def test_round_trip_restores_weights_and_card(package, tiny_state):
    loaded = load_package(package)
    for key, value in tiny_state.items():
        torch.testing.assert_close(loaded.model.state_dict()[key], value)
    c = loaded.card
    assert c.architecture.name == "hymamba" and dict(c.architecture.config) == json.loads(json.dumps(TINY))
    assert [(label.value, label.name) for label in c.labels] == [(1, "spleen"), (2, "liver")]
    assert all(len(label.color) == 3 for label in c.labels)
    assert c.input.modality == "CT" and c.input.spacing == (1.5, 1.5, 1.5)
    assert len(c.weights_sha256) == 64 and c.weights_file == WEIGHTS_FILE
    # The card on disk is the same document the typed card was read from.
    on_disk = json.loads((package / CARD_FILE).read_text())
    assert on_disk["labels"] == c.labels_as_dicts() and on_disk["weights"]["sha256"] == c.weights_sha256
    assert not loaded.model.training


def test_tampered_weights_fail_the_hash(package):
    weights = package / WEIGHTS_FILE
    blob = bytearray(weights.read_bytes())
    blob[-1] ^= 0xFF
    weights.write_bytes(bytes(blob))
    with pytest.raises(PackageError, match="SHA-256"):
        load_package(package)


def test_architecture_mismatch_is_named(package):
    card_path = package / CARD_FILE
    c = json.loads(card_path.read_text())
    c["architecture"]["config"]["channels"] = [8, 8, 8, 8, 16]
    card_path.write_text(json.dumps(c))
    with pytest.raises(PackageError, match=r"do not match architecture 'hymamba'.*shape-mismatched"):
        load_package(package)
    c["architecture"]["name"] = "no_such_net"
    card_path.write_text(json.dumps(c))
    with pytest.raises(PackageError, match="unknown model name"):
        load_package(package)


def test_save_refuses_weights_of_another_architecture(tmp_path, tiny_state):
    partial = {k: v for k, v in tiny_state.items() if not k.startswith("encoder.mamba")}
    with pytest.raises(PackageError, match="missing"):
        save_package(tmp_path / "p", model_name="hymamba", model_config=TINY, state_dict=partial, card=card())
    assert not (tmp_path / "p").exists()


def test_labels_must_fit_the_output_channels(tmp_path, tiny_state):
    with pytest.raises(PackageError, match="output channels"):
        save_package(
            tmp_path / "p",
            model_name="hymamba",
            model_config=TINY,
            state_dict=tiny_state,
            card=card(labels={"1": "a", "5": "b"}),
        )


def test_zip_archive_loads_and_is_verified(package, tmp_path):
    archive = write_zip(package, tmp_path / "pkg.zip")
    assert load_package(archive).card.name == "tiny"
    with zipfile.ZipFile(archive) as z:
        members = {n: z.read(n) for n in z.namelist()}
    card_json = json.loads(members[CARD_FILE])
    card_json["weights"]["sha256"] = "0" * 64
    members[CARD_FILE] = json.dumps(card_json).encode()
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    with pytest.raises(PackageError, match="SHA-256"):
        load_package(bad)


def test_existing_package_refused_unless_overwrite(package, tiny_state):
    with pytest.raises(FileExistsError, match="--overwrite"):
        save_package(package, model_name="hymamba", model_config=TINY, state_dict=tiny_state, card=card())
    save_package(
        package,
        model_name="hymamba",
        model_config=TINY,
        state_dict=tiny_state,
        card=card(version="2.0.0"),
        overwrite=True,
    )
    assert read_card(package).version == "2.0.0"
    assert sorted(p.name for p in package.parent.iterdir()) == ["pkg"]  # no temporary folders left


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"modality": "PET"}, "modality"),
        ({"spacing": (1.5, 0, 1.5)}, "spacing"),
        ({"overlap": 1.0}, "overlap"),
        ({"intensity": {"type": "gamma"}}, "intensity|unknown"),
        ({"labels": {"1": "a", "x": "b"}}, "integer 'value'"),
    ],
)
def test_invalid_cards_are_refused(overrides, message):
    with pytest.raises(PackageError, match=message):
        card(**overrides)


def test_parse_labels_accepts_records_with_snomed():
    table = parse_labels([{"value": 2, "name": "liver", "color": [221, 130, 101], "snomed": "10200004"}])
    assert table == [{"value": 2, "name": "liver", "color": [221, 130, 101], "snomed": "10200004"}]


def test_package_command_from_finetune_checkpoint(tmp_path, tiny_state, data_dir):
    from mambamim.checkpoint import save_checkpoint
    from mambamim.commands import package as command

    ckpt = save_checkpoint(
        tmp_path / "best.pt",
        {
            "format": "mambamim-finetune",
            "format_version": 1,
            "config": {
                "model_name": "hymamba",
                "model_config": TINY,
                "training": {"spacing": [2.0, 2.0, 2.0], "roi": 32, "overlap": 0.25, "license": "CC-BY-4.0"},
            },
            "extra": {"metrics": {"mean_dice": 0.5}},
            "model": {f"module.{k}": v for k, v in tiny_state.items()},  # as saved from a DDP run
        },
    )
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    labels = data_dir / "ct_abdomen" / "labels_btcv13.json"
    args = parser.parse_args(
        [
            "--checkpoint",
            str(ckpt),
            "--out",
            str(tmp_path / "demo"),
            "--labels",
            str(tmp_path / "l.json"),
            "--zip",
        ]
    )
    # Labels beyond the network's 3 outputs: a clear error, nothing written.
    (tmp_path / "l.json").write_text(labels.read_text())
    with pytest.raises(PackageError, match="label value 13 needs at least 14 output channels"):
        command.run(args)
    assert not (tmp_path / "demo").exists()
    (tmp_path / "l.json").write_text(json.dumps({"1": "spleen", "2": "kidney_right"}))
    assert command.run(args) == 0
    c = load_package(tmp_path / "demo.zip").card
    assert c.input.spacing == (2.0, 2.0, 2.0) and c.input.roi_size == (32, 32, 32)
    assert c.input.overlap == 0.25 and c.license == "CC-BY-4.0" and c.metrics == {"mean_dice": 0.5}
    assert c.architecture.name == "hymamba"


def test_weights_only_torch_file_is_accepted(package, tmp_path):
    import hashlib

    from safetensors.torch import load_file

    state = load_file(str(package / WEIGHTS_FILE))
    torch.save(state, package / "weights.pt")
    (package / WEIGHTS_FILE).unlink()
    c = json.loads((package / CARD_FILE).read_text())
    c["weights"] = {
        "file": "weights.pt",
        "sha256": hashlib.sha256((package / "weights.pt").read_bytes()).hexdigest(),
    }
    (package / CARD_FILE).write_text(json.dumps(c))
    assert load_package(package).card.weights_file == "weights.pt"


def test_package_files_get_normal_permissions(package):
    import os

    umask = os.umask(0)
    os.umask(umask)
    assert (package.stat().st_mode & 0o777) == 0o777 & ~umask
    assert all((p.stat().st_mode & 0o777) == 0o666 & ~umask for p in package.iterdir())
