"""The networks as their authors published them: the authors' weights, saved as their code saves them,
converted with ``mambamim convert`` and loaded into our networks, reproduce the authors' outputs.

References are data in ``../shared/fixtures/official`` (see its README): the MambaMIM authors' tiny HyMamba
(``Hybird``, github.com/FengheTan9/MambaMIM @ 471c2f6) and the Taming Mambas authors' four tiny networks
(github.com/LucaLumetti/TamingMambas @ 0f1881a) with weights under their own names, inputs and outputs,
built with mamba-ssm's reference scan.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pytest
import torch
from mambamim.cli import main as cli_main
from mambamim.infer.convert import ConversionError, build_for, convert_checkpoint
from mambamim.nn import build_model

FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "official"
TOLERANCE = 1e-4


def fixture(name: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    path = FIXTURES / name
    if not path.is_file():
        pytest.skip(f"reference fixture {path} not available")
    return load_file(str(path))


def authors_state(data: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k[len("state.") :]: v for k, v in data.items() if k.startswith("state.")}


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return float((a - b).abs().max())


# ------------------------------------------------------------------------------------------- HyMamba


def test_hymamba_fine_tuned_checkpoint_reproduces_the_authors_outputs(tmp_path):
    data = fixture("hymamba_tiny.safetensors")
    checkpoint = tmp_path / "hymamba_finetuned.pth"
    torch.save(authors_state(data), checkpoint)  # a fine-tuned Hybird's state dict, as torch.save writes it
    out = tmp_path / "hymamba.safetensors"
    conversion = convert_checkpoint(checkpoint, "mambamim", out)
    assert conversion.model == "hymamba" and not conversion.unmapped and not conversion.missing
    # the backward-scan parameters their forward never uses, and the fixed position embedding
    assert all(re.search(r"_b(\.|$)|_b_log$|pos_embed$", k) for k in conversion.dropped)
    assert "mae.pos_embed" in conversion.dropped and "equal to ours" in conversion.dropped["mae.pos_embed"]

    model = build_for(conversion).eval()
    from safetensors.torch import load_file

    model.load_state_dict(load_file(str(out)), strict=True)
    with torch.no_grad():
        output = model(data["input"])
        features = model.encoder(data["input"])
    assert max_diff(output, data["output"]) < TOLERANCE
    for level in (2, 3, 4):
        assert max_diff(features[level - 1], data[f"activation.skip{level}"]) < TOLERANCE, level
    assert max_diff(features[-1], data["activation.bottleneck"]) < TOLERANCE


def test_published_default_hymamba_key_list_converts_completely():
    """Every tensor of the default published model (``official/hymamba.json``) has a place in
    ``build_model("hymamba")`` of the same shape, and nothing of ours is left without a source."""
    path = FIXTURES / "hymamba.json"
    if not path.is_file():
        pytest.skip(f"reference fixture {path} not available")
    shapes = json.loads(path.read_text())["default"]["state_dict"]
    from mambamim.infer.convert import check_fit, convert_mambamim

    conversion = convert_mambamim({k: torch.zeros(v) for k, v in shapes.items()})
    assert conversion.config["channels"] == [32, 64, 128, 192, 384]
    assert conversion.config["out_channels"] == 14
    model = build_model("hymamba")
    check_fit(conversion, model)
    assert not conversion.unmapped and not conversion.missing
    assert set(conversion.state) == set(model.state_dict())


def _pretraining_module(encoder: dict[str, torch.Tensor], width: int = 32) -> dict[str, torch.Tensor]:
    """The whole pre-training model under the authors' names (``MambaMIM.state_dict()``): their sparse
    encoder, ``LightDecoder(width)`` and densify layers, with random values of the right shapes."""
    g = torch.Generator().manual_seed(0)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g)

    module = {f"sparse_encoder.{k}": v for k, v in encoder.items()}
    module["sparse_encoder.mae.mask_token"] = rand(1, 1, encoder["mae.pos_embed"].shape[-1])
    feature_channels = [int(encoder[f"embeddings.expend{i}.weight"].shape[0]) for i in range(1, 5)]
    feature_channels.append(feature_channels[-1])
    widths = [width // 2**i for i in range(5)]

    def conv(name: str, cin: int, cout: int, k: int) -> None:
        module[f"{name}.weight"], module[f"{name}.bias"] = rand(cout, cin, k, k, k), rand(cout)

    def bn(name: str, c: int) -> None:
        module.update({f"{name}.weight": rand(c), f"{name}.bias": rand(c), f"{name}.running_mean": rand(c),
                       f"{name}.running_var": rand(c).abs() + 1,
                       f"{name}.num_batches_tracked": torch.tensor(7)})  # fmt: skip

    for k, (cin, cout) in enumerate(zip(widths[:-1], widths[1:])):
        module[f"dense_decoder.dec.{k}.up_sample.weight"] = rand(cin, cin, 2, 2, 2)
        module[f"dense_decoder.dec.{k}.up_sample.bias"] = rand(cin)
        conv(f"dense_decoder.dec.{k}.conv.0", cin, cout, 3), bn(f"dense_decoder.dec.{k}.conv.1", cout)
        conv(f"dense_decoder.dec.{k}.conv.3", cout, cout, 3), bn(f"dense_decoder.dec.{k}.conv.4", cout)
        conv(f"dense_decoder.fuse.{k}.conv.0", 2 * cin, cin, 3), bn(f"dense_decoder.fuse.{k}.conv.1", cin)
        conv(f"dense_decoder.fuse.{k}.conv.3", cin, cin, 3), bn(f"dense_decoder.fuse.{k}.conv.4", cin)
    conv("dense_decoder.proj", widths[-1], 1, 1)
    for k, (e_width, d_width) in enumerate(zip(reversed(feature_channels), widths)):
        conv(f"densify_projs.{k}", e_width, d_width, 1 if k == 0 else 3)
        module[f"mask_tokens.{k}"] = rand(1, e_width, 1, 1, 1)
    module["A_interpolation"] = rand(1, feature_channels[-1], feature_channels[-1])
    return module


def test_mambamim_pretraining_files_convert_and_fine_tuning_loads_the_encoder(tmp_path):
    data = fixture("hymamba_tiny.safetensors")
    state = authors_state(data)
    encoder = {k: v for k, v in state.items() if k.startswith(("embeddings.", "mae."))}

    # 1. the sparse encoder file (*_ct_pretrained_mambamim_timm_style.pth)
    timm_style = tmp_path / "tiny_ct_pretrained_mambamim_timm_style.pth"
    torch.save(encoder, timm_style)
    converted = tmp_path / "encoder.safetensors"
    assert cli_main(["convert", "--from", "mambamim", str(timm_style), "-o", str(converted)]) == 0
    from mambamim.engine.finetune import load_pretrained

    conversion = convert_checkpoint(timm_style, "mambamim")
    model = build_model("hymamba", **conversion.config, out_channels=5).eval()
    messages: list[str] = []
    load_pretrained(model, converted, messages.append)  # what fine-tuning's --pretrained runs
    assert not [k for k in conversion.missing if k.startswith("encoder.")]
    assert not re.search(r"missing.*encoder\.", messages[0])
    own_encoder = {k for k in model.state_dict() if k.startswith("encoder.")}
    from safetensors.torch import load_file

    assert set(load_file(str(converted))) == own_encoder  # zero missing encoder keys, skip blocks included
    with torch.no_grad():
        features = model.encoder(data["input"])
    assert max_diff(features[-1], data["activation.bottleneck"]) < TOLERANCE
    assert max_diff(features[3], data["activation.skip4"]) < TOLERANCE

    with pytest.raises(ValueError, match="mambamim convert --from mambamim"):
        load_pretrained(build_model("hymamba", **conversion.config, out_channels=5), timm_style, print)

    # 2. the whole pre-training model (*_withdecoder_ct_pretrained.pth), with optimizer and argparse args
    module = _pretraining_module(encoder)
    with_decoder = tmp_path / "tiny_withdecoder_ct_pretrained.pth"
    torch.save({"module": module, "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4, "params": [0]}]},
                "args": argparse.Namespace(input_size=48, mask=0.75, dp=0.0)}, with_decoder)  # fmt: skip
    conversion = convert_checkpoint(with_decoder, "mambamim")
    assert conversion.model == "mambamim"
    assert conversion.config["decoder_channels"] == [2, 4, 8, 16, 32]
    assert conversion.unmapped == ["A_interpolation"]  # their C×C matrix; ours is Eq. 8's per-channel decay
    assert "dense_decoder.fuse.0.conv.0.weight" in conversion.dropped  # never run by their decoder
    assert set(conversion.missing) >= {"toki.theta"}
    mim = build_for(conversion)
    report = mim.load_state_dict(conversion.state, strict=False)
    assert not report.unexpected_keys
    torch.testing.assert_close(mim.decoder.up[3].up.weight, module["dense_decoder.dec.0.up_sample.weight"])
    torch.testing.assert_close(mim.decoder.fuse[1][0].weight, module["dense_decoder.fuse.3.conv.0.weight"])
    torch.testing.assert_close(mim.decoder.proj[0].weight, module["densify_projs.4.weight"])
    torch.testing.assert_close(mim.decoder.bottom_proj.weight, module["densify_projs.0.weight"])
    torch.testing.assert_close(mim.decoder.head.weight, module["dense_decoder.proj.weight"])
    with torch.no_grad():
        result = mim.eval()(data["input"], generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(result.loss)


def test_misfitting_and_foreign_checkpoints_are_refused_naming_the_first_mismatch(tmp_path):
    state = authors_state(fixture("hymamba_tiny.safetensors"))
    checkpoint = tmp_path / "finetuned.pth"
    torch.save({**state, "embeddings.extra_thing.weight": torch.zeros(3)}, checkpoint)
    conversion = convert_checkpoint(checkpoint, "mambamim")
    assert conversion.unmapped == ["embeddings.extra_thing.weight"]  # reported, never silently lost

    first = r"encoder\.mamba\.layers\.0\.mixer\.A_log is \[96, 16\] in the checkpoint but \[96, 4\]"
    with pytest.raises(ConversionError, match=first):
        convert_checkpoint(checkpoint, "mambamim", model_config={"d_state": 4})
    broken = dict(state)
    broken["decoder.decoder2.conv_block.conv1.conv.weight"] = torch.zeros(16, 31, 3, 3, 3)
    torch.save(broken, checkpoint)
    with pytest.raises(ConversionError, match=r"up_blocks\.0\.block\.conv1\.weight is \[16, 31, 3, 3, 3\]"):
        convert_checkpoint(checkpoint, "mambamim")
    torch.save({"foo.weight": torch.zeros(2)}, checkpoint)
    with pytest.raises(ConversionError, match="not a MambaMIM checkpoint"):
        convert_checkpoint(checkpoint, "mambamim")
    pickled = tmp_path / "pickled.pth"
    torch.save({"module": {"w": torch.zeros(1)}, "fn": ConversionError("x")}, pickled)
    with pytest.raises(ConversionError, match="weights-only"):
        convert_checkpoint(pickled, "mambamim")
    out = tmp_path / "x.safetensors"
    assert cli_main(["convert", "--from", "mambamim", str(pickled), "-o", str(out)]) == 1
    assert not out.exists()


# ------------------------------------------------------------------------------------------- Taming Mambas

TAMING = {
    "SegMamba": ("taming_segmamba_tiny.safetensors", "nnUNetTrainerSegMamba", "segmamba"),
    "PanSegMamba": ("taming_pansegmamba_tiny.safetensors", "nnUNetTrainerPanSegMamba", "bisegmamba"),
    "MultiSegMamba": ("taming_multisegmamba_tiny.safetensors", "nnUNetTrainerMultiSegMamba", "multisegmamba"),
    "SegMambaSkip": ("taming_segmambaskip_tiny.safetensors", "nnUNetTrainerSegMambaSkip", "segmambaskip"),
}


def nnunet_network_weights(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict as nnU-Net saves it: each ConvDropoutNormReLU's conv and norm again under
    ``all_modules.0/1``, and the encoder again under ``decoder.encoder``."""
    saved = dict(state)
    for key, value in state.items():
        match = re.fullmatch(r"(.+)\.(conv|norm)\.(weight|bias)", key)
        if match and ".mamba" not in key:
            saved[f"{match[1]}.all_modules.{0 if match[2] == 'conv' else 1}.{match[3]}"] = value
    for key, value in list(saved.items()):
        if key.startswith("encoder."):
            saved[f"decoder.{key}"] = value
    return saved


@pytest.mark.parametrize("network", list(TAMING))
def test_taming_nnunet_checkpoints_reproduce_the_authors_outputs(network, tmp_path):
    file, trainer, name = TAMING[network]
    data = fixture(file)
    checkpoint = tmp_path / "checkpoint_final.pth"
    torch.save({"network_weights": nnunet_network_weights(authors_state(data)), "optimizer_state": {},
                "init_args": {"configuration": "3d_fullres", "fold": 0}, "trainer_name": trainer,
                "current_epoch": 1000, "_best_ema": 0.8, "logging": {"ema_fg_dice": [0.1, 0.8]},
                "inference_allowed_mirroring_axes": (0, 1, 2)}, checkpoint)  # fmt: skip
    out = tmp_path / f"{name}.safetensors"
    assert cli_main(["convert", "--from", "taming-nnunet", str(checkpoint), "-o", str(out)]) == 0
    conversion = convert_checkpoint(checkpoint, "taming-nnunet")
    assert conversion.model == name and not conversion.unmapped and not conversion.missing
    assert all(".all_modules." in k or k.startswith("decoder.encoder.") for k in conversion.dropped)
    from safetensors.torch import load_file

    model = build_for(conversion).eval()
    model.load_state_dict(load_file(str(out)), strict=True)
    assert sum(p.numel() for p in model.parameters()) == json.loads(
        (FIXTURES / "taming.json").read_text())["networks"][network]["parameters"]  # fmt: skip
    with torch.no_grad():
        assert max_diff(model(data["input"]), data["output"]) < TOLERANCE


def test_taming_variant_without_trainer_name_needs_naming():
    data = fixture("taming_segmambaskip_tiny.safetensors")
    from mambamim.infer.convert import convert_taming

    state = authors_state(data)
    assert convert_taming(state).model == "bisegmamba"  # same parameters: the weights cannot tell
    assert convert_taming(state, model="segmambaskip").model == "segmambaskip"
    with pytest.raises(ConversionError, match="not a Taming Mambas"):
        convert_taming({"encoder.stem.convs.0.conv.weight": torch.zeros(2, 1, 3, 3, 3)})
