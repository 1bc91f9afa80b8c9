"""Registry: every model is built by name, follows the segmentation-model convention, rejects bad input."""

from __future__ import annotations

import importlib
import inspect

import pytest
import torch
from mambamim.nn import MODELS, build_model, model_class

TINY = {
    "hymamba": dict(channels=(4, 4, 8, 8, 12), blocks=(1, 1, 1, 1, 1), mamba_depth=1, d_state=4),
    "vanilla_mamba": dict(hidden_size=12, depth=4, feature_size=4, d_state=4, img_size=32),
}


def _importable(name: str) -> bool:
    module = MODELS[name].split(":")[0]
    try:
        importlib.import_module(f"mambamim.nn.{module}")
    except ImportError:
        return False
    return True


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_registered_model_follows_the_constructor_convention(name):
    if not _importable(name):
        pytest.skip(f"{name}: its module is not importable here")
    cls = model_class(name)
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    assert [p.name for p in params[:2]] == ["in_channels", "out_channels"]
    assert params[0].default == 1 and params[1].default == 14
    assert isinstance(cls.size_multiple, int) and cls.size_multiple >= 1


@pytest.mark.parametrize("name", sorted(TINY))
def test_tiny_models_by_name_run_on_a_non_cubic_multiple(name):
    model = build_model(name, in_channels=1, out_channels=2, **TINY[name]).eval()
    m = model.size_multiple
    with torch.no_grad():
        out = model(torch.randn(1, 1, 2 * m, 3 * m, 4 * m))
    assert out.shape == (1, 2, 2 * m, 3 * m, 4 * m)
    with pytest.raises(ValueError, match=f"multiple of {m}"):
        model(torch.randn(1, 1, 2 * m, 3 * m + m // 2, 4 * m))
    with pytest.raises(ValueError, match="in_channels"):
        model(torch.randn(1, 3, 2 * m, 2 * m, 2 * m))


def test_unknown_model_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"'unet3000'.*hymamba.*swin_unetr.*vanilla_mamba"):
        build_model("unet3000")


def test_unknown_constructor_argument_is_a_type_error_naming_it():
    with pytest.raises(TypeError, match="widht"):
        build_model("hymamba", widht=3)


def test_config_overrides_constructor_defaults():
    model = build_model("hymamba", out_channels=5, **TINY["hymamba"])
    assert model.head.out_channels == 5
    assert model.encoder.channels == (4, 4, 8, 8, 12)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_public_network_documents_a_usage_example(name):
    """As MONAI's network files do: a short example that builds the class and runs it (the code parses)."""
    import ast
    import sys
    import textwrap

    cls = model_class(name)
    docs = [inspect.getdoc(cls) or "", inspect.getdoc(sys.modules[cls.__module__]) or ""]
    examples = [doc.split("Example::", 1)[1] for doc in docs if "Example::" in doc]
    assert examples, f"{cls.__name__} has no usage example"
    code = textwrap.dedent(examples[0].split("\n\n", 2)[1])
    assert f"{cls.__name__}(" in code
    ast.parse(code)
