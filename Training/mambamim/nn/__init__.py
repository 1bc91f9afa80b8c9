"""Networks: Mamba block, scan orders, HyMamba, Vanilla Mamba, Taming-Mambas variants, baselines."""

from mambamim.nn.registry import MODELS, build_model, model_class

__all__ = ["MODELS", "build_model", "model_class"]
