"""Nothing silent with ``--pretrained``: the encoder must fit, and its pre-training settings must match.

Pre-training writes its encoder architecture, spacing, intensity and crop size into the safetensors
header (``encoder_metadata``); fine-tuning compares them with its own settings (``compare_settings``)
and warns about every difference: an encoder pre-trained at 1.5 mm on windowed CT and fine-tuned at
3 mm on z-scored MR still loads, but the user should know. An encoder whose tensors do not all fit
(shape mismatches, encoder keys missing from the file) is an error unless ``allow_partial``.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mambamim.errors import InvalidInput

ENCODER_FORMAT = "mambamim-encoder"
_SHOWN = 3


def encoder_metadata(mim_config: Mapping[str, Any], training: Any) -> dict[str, str]:
    """safetensors metadata (string -> string) for an encoder pre-trained with ``training`` settings."""
    return {
        "format": ENCODER_FORMAT,
        "architecture": json.dumps(
            {"name": "hymamba", "encoder_config": mim_config.get("encoder_config", {})}
        ),
        "spacing": json.dumps([float(s) for s in training.spacing]),
        "intensity": json.dumps(training.intensity),
        "roi": json.dumps(int(training.roi)),
    }


def read_encoder_metadata(path: Path) -> dict[str, Any] | None:
    """The pre-training settings stored in a safetensors encoder file (or a pre-training checkpoint), or
    None if it has none."""
    if path.suffix != ".safetensors":
        return _pretrain_checkpoint_settings(path)
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        raw = f.metadata() or {}
    if raw.get("format") != ENCODER_FORMAT or "spacing" not in raw:
        return None
    try:
        return {
            key: json.loads(raw[key]) for key in ("architecture", "spacing", "intensity", "roi") if key in raw
        }
    except json.JSONDecodeError:
        return None


def _pretrain_checkpoint_settings(path: Path) -> dict[str, Any] | None:
    """The same settings from a pre-training ``last.pt`` (its config), or None for any other file."""
    from mambamim.checkpoint import load_checkpoint

    try:
        payload = load_checkpoint(path)
    except Exception:  # not a mambamim checkpoint (a plain state dict, say): nothing to compare
        return None
    config = payload.get("config")
    if payload.get("format") != "mambamim-pretrain" or not isinstance(config, dict):
        return None
    training = config.get("training") or {}
    encoder_config = (config.get("model") or {}).get("encoder_config", {})
    saved = {"architecture": {"name": "hymamba", "encoder_config": encoder_config}}
    saved.update({key: training[key] for key in ("spacing", "intensity", "roi") if key in training})
    return saved


def compare_settings(
    saved: Mapping[str, Any], model_name: str, model_config: Mapping[str, Any], training: Any
) -> list[str]:
    """Every difference between the pre-training settings ``saved`` and this fine-tuning run."""
    differences = []
    architecture = saved.get("architecture") or {}
    if architecture.get("name") and architecture["name"] != model_name:
        differences.append(f"architecture {architecture['name']} vs {model_name}")
    elif "encoder_config" in architecture:
        differences += _encoder_differences(architecture["encoder_config"], model_config)
    if "spacing" in saved and [round(float(s), 6) for s in saved["spacing"]] != [
        round(float(s), 6) for s in training.spacing
    ]:
        differences.append(f"spacing {saved['spacing']} mm vs {list(training.spacing)} mm")
    if "intensity" in saved and _plain(saved["intensity"]) != _plain(training.intensity):
        differences.append(f"intensity {saved['intensity']} vs {training.intensity}")
    return differences


def _encoder_differences(saved: Mapping[str, Any], model_config: Mapping[str, Any]) -> list[str]:
    from mambamim.nn.hymamba import HyMambaEncoder

    params = inspect.signature(HyMambaEncoder).parameters
    differences = []
    for name, param in params.items():
        default = None if param.default is inspect.Parameter.empty else param.default
        before, now = _plain(saved.get(name, default)), _plain(model_config.get(name, default))
        if before != now:
            differences.append(f"encoder {name} {before} vs {now}")
    return differences


def _plain(value: Any) -> Any:
    """JSON round trip, so that tuples and lists (and int and float 1.0) compare equal."""
    return json.loads(json.dumps(value))


def check_encoder_fit(
    model_keys: Sequence[str], result: Any, path: Path, allow_partial: bool, report: Callable[[str], None]
) -> None:
    """Refuse an encoder that loaded only in part (``result``: a ``LoadReport``) unless ``allow_partial``."""
    encoder_keys = [k for k in model_keys if k.startswith("encoder.")]
    if not encoder_keys:  # not an encoder-decoder network: the caller's matched-key check is all there is
        return
    missing = [k for k in result.missing if k.startswith("encoder.")]
    mismatched = [k for k in result.shape_mismatched if k.startswith("encoder.")]
    if not missing and not mismatched:
        return
    problems = []
    if mismatched:
        shapes = "; ".join(
            f"{k} {list(result.shapes[k][0])} vs model {list(result.shapes[k][1])}"
            for k in mismatched[:_SHOWN]
        )
        problems.append(f"{len(mismatched)} encoder tensor(s) of another shape ({shapes})")
    if missing:
        problems.append(
            f"{len(missing)} encoder tensor(s) missing from the file ({', '.join(missing[:_SHOWN])})"
        )
    text = (
        f"--pretrained {path}: {' and '.join(problems)}; {len(encoder_keys) - len(missing) - len(mismatched)}"
        f"/{len(encoder_keys)} encoder tensors fit"
    )
    if not allow_partial:
        raise InvalidInput(
            f"{text}. Is it an encoder of this architecture and size? Pass --allow-partial-encoder to train "
            "with the rest left at their initial values"
        )
    report(f"warning: {text}; the rest start from their initial values (--allow-partial-encoder)")


def warn_on_setting_changes(
    path: Path, model_name: str, model_config: Mapping[str, Any], training: Any, report: Callable[[str], None]
) -> None:
    """One warning listing how this run differs from the encoder's pre-training (or that it cannot tell)."""
    saved = read_encoder_metadata(path)
    if saved is None:
        report(
            f"note: --pretrained {path} stores no pre-training settings; spacing and intensity not checked"
        )
        return
    differences = compare_settings(saved, model_name, model_config, training)
    if differences:
        report(
            f"warning: --pretrained {path} was pre-trained with other settings than this run: "
            + "; ".join(differences)
        )
