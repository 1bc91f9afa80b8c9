"""Load the authors' checkpoints: map their parameter names onto ours, check the architecture fits.

Sources (``mambamim convert --from SOURCE CHECKPOINT -o OUT.safetensors``, or :func:`convert_checkpoint`):

- ``mambamim`` (github.com/FengheTan9/MambaMIM, commit 471c2f6): the sparse encoder file of their
  pre-training, ``*_ct_pretrained_mambamim_timm_style.pth`` (``embeddings.*``, ``mae.*``), the whole
  pre-training model, ``*_withdecoder_ct_pretrained.pth`` (a dict whose ``module`` holds
  ``sparse_encoder.*``, ``dense_decoder.*``, ``densify_projs.*``, ``mask_tokens.*``, ``A_interpolation``),
  and a fine-tuned ``Hybird`` state dict (``embeddings.*``, ``mae.*``, ``decoder.*``). Their
  ``*_b`` backward-scan parameters (``bimamba_type="v1"`` never uses them) and fixed position embedding
  are dropped and reported.
- ``taming-nnunet`` (github.com/LucaLumetti/TamingMambas, commit 0f1881a): an nnU-Net checkpoint
  (``network_weights``) of SegMamba, BiSegMamba (their ``PanSegMamba``), MultiSegMamba or SegMambaSkip;
  the ``decoder.encoder.*`` and ``*.all_modules.N.*`` aliases nnU-Net also saves are dropped.

Every file is read with ``torch.load(weights_only=True)``. The model's configuration is inferred from
the tensor shapes, our network is built with it (or with a configuration the caller gives), and every
converted tensor must match one of its parameters by name and shape: the first that does not is named
in the error. Keys that no rule maps are reported, never silently lost.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mambamim.errors import MambaMIMError
from mambamim.nn.taming.convert import ALIAS_REASON, taming_config, taming_variant

SOURCES = ("mambamim", "taming-nnunet")
CONVERTED_FORMAT = "mambamim-converted"


class ConversionError(MambaMIMError, ValueError):
    """A checkpoint cannot be converted: unreadable, of another kind, or not fitting our architecture."""


@dataclass
class Conversion:
    """Outcome of a conversion: our state dict plus an account of every source key left out."""

    state: dict[str, torch.Tensor]
    model: str  # registry name of the network (``hymamba``, ``segmamba``, ...) or ``mambamim``
    config: dict[str, Any]  # constructor arguments that rebuild the network
    kind: str  # what the checkpoint held, in words
    dropped: dict[str, str] = field(default_factory=dict)  # source key -> why it is not needed
    unmapped: list[str] = field(default_factory=list)  # source keys no rule maps
    missing: list[str] = field(default_factory=list)  # our parameters the checkpoint does not provide

    def summary(self) -> str:
        lines = [
            f"{self.kind}: {len(self.state)} tensors converted for {self.model} {json.dumps(self.config)}"
        ]
        reasons: dict[str, list[str]] = {}
        for key, reason in self.dropped.items():
            reasons.setdefault(reason, []).append(key)
        for reason, keys in reasons.items():
            lines.append(f"dropped {len(keys)} ({reason}): {_listing(keys)}")
        if self.unmapped:
            lines.append(
                f"UNMAPPED {len(self.unmapped)} (no counterpart in our network): {_listing(self.unmapped)}"
            )
        if self.missing:
            lines.append(f"not in the checkpoint {len(self.missing)} (left at their initial values): "
                         f"{_listing(self.missing)}")  # fmt: skip
        return "\n".join(lines)


def _listing(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown if len(keys) <= limit else f"{shown}, ... ({len(keys) - limit} more)"


# --------------------------------------------------------------------------------------------------
# Reading


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The object stored in ``path`` (weights only): a ``.safetensors`` file or a torch file."""
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:  # safetensors raises several unrelated types
            raise ConversionError(f"checkpoint {path} is not a readable safetensors file ({exc})") from None
    try:
        # Their pre-training stores its argparse.Namespace next to the weights: allowed as a plain attribute
        # container; everything inside it still passes the weights-only unpickler's checks.
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle / zip / EOF errors have no common base
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConversionError(
            f"checkpoint {path} is corrupt or not a weights-only torch file ({reason})"
        ) from None


def _tensors(obj: Any, where: str) -> dict[str, torch.Tensor]:
    if not isinstance(obj, Mapping) or not obj or not all(torch.is_tensor(v) for v in obj.values()):
        raise ConversionError(f"{where} holds no state dict of tensors")
    return dict(obj)


# --------------------------------------------------------------------------------------------------
# MambaMIM / HyMamba (their names -> ours)

_BACKWARD = re.compile(r"\.(A_b_log|D_b|conv1d_b\.\w+|x_proj_b\.\w+|dt_proj_b\.\w+)$")
_ENCODER_RULES: list[tuple[str, str]] = [
    (r"embeddings\.stem\.(\w+)", "stem.{0}"),
    (r"embeddings\.layer([2-9])\.(\d+)\.conv1\.(\w+)", "stages.{L0}.{1}.dwconv.{2}"),
    (r"embeddings\.layer([2-9])\.(\d+)\.norm\.(\w+)", "stages.{L0}.{1}.norm.{2}"),
    (r"embeddings\.layer([2-9])\.(\d+)\.conv2\.(\w+)", "stages.{L0}.{1}.pw1.{2}"),
    (r"embeddings\.layer([2-9])\.(\d+)\.conv3\.(\w+)", "stages.{L0}.{1}.pw2.{2}"),
    (r"embeddings\.expend(\d)\.(\w+)", "downsamples.{I0}.conv.{1}"),
    (r"embeddings\.encoder(\d)\.(conv1|conv2|norm1|norm2)\.(\w+)", "skip_blocks.{I0}.{1}.{2}"),
    (r"embeddings\.encoder(\d)\.conv3\.(\w+)", "skip_blocks.{I0}.shortcut.0.{1}"),
    (r"embeddings\.encoder(\d)\.norm3\.(\w+)", "skip_blocks.{I0}.shortcut.1.{1}"),
    (r"mae\.blocks\.(\d+)\.(norm1|norm2)\.(\w+)", "mamba.layers.{0}.{1}.{2}"),
    (r"mae\.blocks\.(\d+)\.mlp\.(fc1|fc2)\.(\w+)", "mamba.layers.{0}.mlp.{1}.{2}"),
    (r"mae\.blocks\.(\d+)\.mamba\.(.+)", "mamba.layers.{0}.mixer.{1}"),
]
_DECODER_RULES: list[tuple[str, str]] = [
    (r"decoder\.decoder([2-9])\.transp_conv\.conv\.(\w+)", "up_blocks.{D}.upsample.{1}"),
    (r"decoder\.decoder([2-9])\.conv_block\.(conv1|conv2)\.conv\.(\w+)", "up_blocks.{D}.block.{1}.{2}"),
    (r"decoder\.decoder([2-9])\.conv_block\.(norm1|norm2)\.(\w+)", "up_blocks.{D}.block.{1}.{2}"),
    (r"decoder\.decoder([2-9])\.conv_block\.conv3\.conv\.(\w+)", "up_blocks.{D}.block.shortcut.0.{1}"),
    (r"decoder\.decoder([2-9])\.conv_block\.norm3\.(\w+)", "up_blocks.{D}.block.shortcut.1.{1}"),
    (r"decoder\.decoder1\.(conv1|conv2|norm1|norm2)\.(\w+)", "out_block.{0}.{1}"),
    (r"decoder\.decoder1\.conv3\.(\w+)", "out_block.shortcut.0.{0}"),
    (r"decoder\.decoder1\.norm3\.(\w+)", "out_block.shortcut.1.{0}"),
    (r"decoder\.out\.conv\.(\w+)", "head.{0}"),
]


def _apply_rules(key: str, rules: list[tuple[str, str]]) -> str | None:
    for pattern, target in rules:
        match = re.fullmatch(pattern, key)
        if match:
            groups = match.groups()
            first = int(groups[0]) if groups and groups[0].isdigit() else 0
            # L0: their layerK holds level K-1; I0: their 1-based index; D: their decoderK is up block K-2
            return target.format(*groups, L0=first - 1, I0=first - 1, D=first - 2)
    return None


def _linear_weight(key: str, value: torch.Tensor) -> torch.Tensor:
    """Their MedNeXt 1³ convs are our Linear layers: (out, in, 1, 1, 1) -> (out, in)."""
    if re.search(r"\.pw[12]\.weight$", key) and value.dim() == 5:
        return value.flatten(1)
    return value


def _hymamba_encoder_config(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, Any]:
    def get(name: str) -> torch.Tensor:
        try:
            return state[prefix + name]
        except KeyError:
            raise ConversionError(f"no {prefix + name}: not a MambaMIM / HyMamba checkpoint") from None

    channels = [int(get("embeddings.stem.weight").shape[0])]
    level = 1
    while prefix + f"embeddings.expend{level}.weight" in state:
        channels.append(int(get(f"embeddings.expend{level}.weight").shape[0]))
        level += 1
    blocks, expansion = [0], [2]
    for level in range(2, len(channels) + 1):
        indices = {int(k.split(".")[2 + prefix.count(".")]) for k in state
                   if k.startswith(f"{prefix}embeddings.layer{level}.")}  # fmt: skip
        blocks.append(len(indices))
        conv2 = state.get(f"{prefix}embeddings.layer{level}.0.conv2.weight")
        expansion.append(int(conv2.shape[0]) // channels[level - 1] if conv2 is not None else 2)
    first_dw = next(
        (
            v
            for k, v in state.items()
            if re.fullmatch(re.escape(prefix) + r"embeddings\.layer\d\.0\.conv1\.weight", k)
        ),
        None,
    )
    depth = len({k.split(".")[2 + prefix.count(".")] for k in state if k.startswith(prefix + "mae.blocks.")})
    in_proj = get("mae.blocks.0.mamba.in_proj.weight")
    return {
        "in_channels": int(get("embeddings.stem.weight").shape[1]),
        "channels": channels,
        "blocks": blocks,
        "expansion": expansion,
        "kernel_size": int(first_dw.shape[-1]) if first_dw is not None else 3,
        "mamba_depth": depth,
        "d_state": int(get("mae.blocks.0.mamba.A_log").shape[1]),
        "d_conv": int(get("mae.blocks.0.mamba.conv1d.weight").shape[-1]),
        "expand": int(in_proj.shape[0]) // 2 // channels[-1],
        "mlp_ratio": int(get("mae.blocks.0.mlp.fc1.weight").shape[0]) / channels[-1],
    }


def _map_hymamba_encoder(
    state: Mapping[str, torch.Tensor], prefix: str, ours: str, out: dict, dropped: dict, unmapped: list
) -> None:
    from mambamim.nn.vision_mamba import sincos_position_embedding_3d

    for key, value in state.items():
        if not key.startswith((prefix + "embeddings.", prefix + "mae.")):
            continue
        name = key[len(prefix) :]
        if _BACKWARD.search(name):
            dropped[key] = "backward-scan parameters their forward never uses"
            continue
        if name == "mae.pos_embed":
            grid = round(value.shape[1] ** (1 / 3))
            ours_pe = sincos_position_embedding_3d((grid,) * 3, value.shape[2])
            same = value.shape[1] == grid**3 and torch.allclose(value[0].float(), ours_pe, atol=1e-4)
            dropped[key] = ("fixed sin-cos position embedding, recomputed (equal to ours)" if same
                            else "fixed position embedding, recomputed (DIFFERS from ours)")  # fmt: skip
            continue
        if name == "mae.mask_token":
            dropped[key] = "Mamba-stage mask token, overwritten by TOKI in their pre-training"
            continue
        target = _apply_rules(name, _ENCODER_RULES)
        if target is None:
            unmapped.append(key)
        else:
            out[f"{ours}{target}"] = _linear_weight(target, value)


def _decoder_config(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    head = state["decoder.out.conv.weight"]
    return {"out_channels": int(head.shape[0])}


def _convert_hymamba(state: dict[str, torch.Tensor], kind: str) -> Conversion:
    out: dict[str, torch.Tensor] = {}
    dropped: dict[str, str] = {}
    unmapped: list[str] = []
    config = _hymamba_encoder_config(state, "")
    _map_hymamba_encoder(state, "", "encoder.", out, dropped, unmapped)
    has_decoder = any(k.startswith("decoder.") for k in state)
    for key, value in state.items():
        if key.startswith(("embeddings.", "mae.")):
            continue
        target = _apply_rules(key, _DECODER_RULES) if key.startswith("decoder.") else None
        if target is None:
            unmapped.append(key)
        else:
            out[target] = value
    if has_decoder:
        config.update(_decoder_config(state))
    return Conversion(out, "hymamba", config, kind, dropped, unmapped)


def _convert_mambamim_pretraining(state: dict[str, torch.Tensor]) -> Conversion:
    out: dict[str, torch.Tensor] = {}
    dropped: dict[str, str] = {}
    unmapped: list[str] = []
    encoder_config = _hymamba_encoder_config(state, "sparse_encoder.")
    _map_hymamba_encoder(state, "sparse_encoder.", "encoder.", out, dropped, unmapped)
    levels = len(encoder_config["channels"]) - 1  # L: CNN levels; their index k counts from the Mamba map
    widths = [0] * (levels + 1)
    for key, value in state.items():
        if key.startswith(("sparse_encoder.embeddings.", "sparse_encoder.mae.")):
            continue
        match = re.fullmatch(r"dense_decoder\.dec\.(\d+)\.up_sample\.(\w+)", key)
        if match:
            k = int(match[1])
            out[f"decoder.up.{levels - 1 - k}.up.{match[2]}"] = value
            widths[levels - k] = int(value.shape[0])
            continue
        match = re.fullmatch(r"dense_decoder\.dec\.(\d+)\.conv\.(\d+\.\w+)", key)
        if match:
            k = int(match[1])
            out[f"decoder.up.{levels - 1 - k}.conv.{match[2]}"] = value
            if match[2] == "0.weight":
                widths[levels - 1 - k] = int(value.shape[0])
            continue
        match = re.fullmatch(r"dense_decoder\.fuse\.(\d+)\.conv\.(\d+\.\w+)", key)
        if match:
            k = int(match[1])
            if k == 0:
                dropped[key] = "fusion at the Mamba scale, never run by their decoder"
            else:
                out[f"decoder.fuse.{levels - k}.{match[2]}"] = value
            continue
        match = re.fullmatch(r"densify_projs\.(\d+)\.(\w+)", key)
        if match:
            k = int(match[1])
            out[f"decoder.bottom_proj.{match[2]}" if k == 0 else f"decoder.proj.{levels - k}.{match[2]}"] = (
                value
            )
            continue
        match = re.fullmatch(r"mask_tokens\.(\d+)", key)
        if match:
            k = int(match[1])
            if k == 0:
                dropped[key] = "Mamba-scale mask token, replaced by TOKI in their forward"
            else:
                out[f"decoder.mask_tokens.{levels - k}"] = value
            continue
        if key == "dense_decoder.proj.weight" or key == "dense_decoder.proj.bias":
            out[f"decoder.head.{key.rsplit('.', 1)[1]}"] = value
            continue
        unmapped.append(key)  # A_interpolation: a full C×C matrix, where Eq. 8 (ours) has a decay per channel
    config = {"encoder_config": encoder_config}
    if all(widths):
        config["decoder_channels"] = widths
    return Conversion(out, "mambamim", config, "MambaMIM pre-training model (encoder and decoder)",
                      dropped, unmapped)  # fmt: skip


def convert_mambamim(obj: Any, where: str = "checkpoint", model: str | None = None) -> Conversion:
    """Convert any of the three MambaMIM files (see the module docstring) to our names."""
    if isinstance(obj, Mapping) and isinstance(obj.get("module"), Mapping):
        state = _tensors(obj["module"], f"{where}['module']")
        if not any(k.startswith("sparse_encoder.") for k in state):
            raise ConversionError(f"{where}: 'module' holds no sparse_encoder.* weights")
        return _convert_mambamim_pretraining(state)
    state = _tensors(obj, where)
    if any(k.startswith("sparse_encoder.") for k in state):
        return _convert_mambamim_pretraining(state)
    if not any(k.startswith("embeddings.") for k in state):
        raise ConversionError(
            f"{where} has no embeddings.* / sparse_encoder.* keys: not a MambaMIM checkpoint"
        )
    if any(k.startswith("decoder.") for k in state):
        return _convert_hymamba(state, "fine-tuned HyMamba (Hybird)")
    return _convert_hymamba(state, "MambaMIM pre-trained encoder (timm style)")


# --------------------------------------------------------------------------------------------------
# Taming Mambas (nnU-Net checkpoints)


def convert_taming(obj: Any, where: str = "checkpoint", model: str | None = None) -> Conversion:
    """Convert an nnU-Net checkpoint (or a bare ``network_weights`` dict) of a Taming Mambas network;
    ``model`` names the variant where the weights cannot (SegMambaSkip has BiSegMamba's parameters)."""
    trainer = ""
    if isinstance(obj, Mapping) and isinstance(obj.get("network_weights"), Mapping):
        state = _tensors(obj["network_weights"], f"{where}['network_weights']")
        trainer = str(obj.get("trainer_name", ""))
    else:
        state = _tensors(obj, where)
    # nnU-Net saves some tensors twice; the variant and configuration follow from the shapes.
    dropped: dict[str, str] = {}
    kept: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith("decoder.encoder.") or ".all_modules." in key:
            dropped[key] = ALIAS_REASON
        else:
            kept[key] = value
    try:
        variant = model or taming_variant(kept, trainer)
        config = taming_config(kept, variant)
    except ValueError as exc:
        raise ConversionError(str(exc)) from None
    unmapped = [k for k in kept if not k.startswith(("encoder.", "decoder."))]
    for key in unmapped:
        kept.pop(key)
    return Conversion(kept, variant, config, "Taming Mambas nnU-Net network", dropped, unmapped)


CONVERTERS: dict[str, Callable[..., Conversion]] = {
    "mambamim": convert_mambamim,
    "taming-nnunet": convert_taming,
}


# --------------------------------------------------------------------------------------------------
# Fit check and output


def build_for(conversion: Conversion) -> nn.Module:
    """Our network for a conversion's model name and configuration."""
    if conversion.model == "mambamim":
        from mambamim.mim.model import MambaMIM

        return MambaMIM(**conversion.config)
    from mambamim.nn.registry import build_model

    return build_model(conversion.model, **conversion.config)


def check_fit(conversion: Conversion, model: nn.Module, where: str = "checkpoint") -> None:
    """Raise naming the first converted tensor that has no parameter of that name and shape in ``model``;
    record in ``conversion.missing`` the model's tensors the checkpoint does not provide."""
    own = model.state_dict()
    encoder_only = not any(not k.startswith("encoder.") for k in conversion.state)
    for key, value in conversion.state.items():
        if key not in own:
            raise ConversionError(f"{where} does not fit {conversion.model}: our network has no {key} "
                                  f"{list(value.shape)}")  # fmt: skip
        if tuple(own[key].shape) != tuple(value.shape):
            raise ConversionError(
                f"{where} does not fit {conversion.model}: {key} is {list(value.shape)} in the checkpoint "
                f"but {list(own[key].shape)} in our network"
            )
    conversion.missing = [
        k for k in own
        if k not in conversion.state and not (encoder_only and not k.startswith("encoder."))
        and not k.endswith("num_batches_tracked")
    ]  # fmt: skip


def convert_checkpoint(
    path: str | Path,
    source: str,
    out: str | Path | None = None,
    model_config: Mapping[str, Any] | None = None,
    model: str | None = None,
) -> Conversion:
    """Read an authors' checkpoint, map it onto our names, check it fits our network, and optionally
    write ``out`` (safetensors, with the model name and configuration in its metadata).

    Args:
        path: the authors' file.
        source: one of :data:`SOURCES`.
        out: where to write the converted weights (``None``: do not write).
        model_config: constructor arguments to check against instead of those inferred from the shapes.
        model: the variant, where the weights cannot tell (``segmambaskip`` vs ``bisegmamba``).
    """
    if source not in CONVERTERS:
        raise ConversionError(f"unknown source {source!r}; valid: {', '.join(SOURCES)}")
    path = Path(path)
    conversion = CONVERTERS[source](read_checkpoint(path), str(path), model)
    if model_config:
        conversion.config = {**conversion.config, **dict(model_config)}
    try:
        model = build_for(conversion)
    except (TypeError, ValueError) as exc:
        raise ConversionError(
            f"{path}: cannot build {conversion.model} with {conversion.config}: {exc}"
        ) from None
    check_fit(conversion, model, str(path))
    if out is not None:
        save_converted(conversion, out)
    return conversion


def save_converted(conversion: Conversion, out: str | Path) -> Path:
    """Write the converted tensors to ``out`` (safetensors), the model name and configuration as metadata."""
    from safetensors.torch import save_file

    from mambamim.safe_write import safe_write

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    metadata = {
        "format": CONVERTED_FORMAT,
        "model": conversion.model,
        "config": json.dumps(conversion.config),
    }
    with safe_write(out) as tmp:
        save_file({k: v.contiguous() for k, v in conversion.state.items()}, str(tmp), metadata=metadata)
    return out
