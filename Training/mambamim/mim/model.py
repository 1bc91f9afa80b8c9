"""MambaMIM: masked image modelling for a hybrid CNN-Mamba encoder (arXiv 2408.08070, §3.2-3.4).

One training step (Fig. 3): draw one random mask per sample on the Mamba grid (6³ tokens for 96³);
run the HyMamba encoder sparsely with that mask upsampled to every CNN stage (bottom-up 3-D hybrid
masking, :mod:`mambamim.mim.sparse`); feed only the visible tokens to the Mamba stage in scan order;
fill the masked tokens with TOKI (:mod:`mambamim.mim.toki`) or, for the "w/o TOKI" ablation, a learnable
token; decode hierarchically (:mod:`mambamim.mim.decoder`); MSE on masked voxels against per-patch
normalised targets (:mod:`mambamim.mim.loss`).

``model.encoder`` is a genuine :class:`~mambamim.nn.hymamba.HyMambaEncoder`, so the ``encoder.*`` entries
of the state dict load into ``build_model("hymamba", ...)`` of the same size without any key mapping.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mambamim.checkpoint import load_checkpoint
from mambamim.errors import InvalidInput
from mambamim.mim.decoder import MIMDecoder
from mambamim.mim.loss import denormalize_patches, mim_loss
from mambamim.mim.masking import random_token_mask, upsample_mask
from mambamim.mim.sparse import cnn_features, visible_mamba_sequence
from mambamim.mim.toki import TOKI
from mambamim.nn.blocks import channels_last, check_input
from mambamim.nn.hymamba import HyMambaEncoder
from mambamim.nn.state_dict import strict_mismatch

MASK_TOKENS = ("toki", "learnable")
# The ``format`` field of a pre-training checkpoint (written by the pre-training recipe).
PRETRAIN_FORMAT = "mambamim-pretrain"


@dataclass(frozen=True)
class MambaMIMConfig:
    """The constructor arguments that rebuild a :class:`MambaMIM` (``MambaMIM(**config.as_dict())``);
    checkpoints store :meth:`as_dict` under ``config["model"]``."""

    encoder_config: dict[str, Any]
    mask_ratio: float
    mask_token: str
    skip: bool
    bottom_up: bool
    norm_pix_loss: bool
    norm_patch: int
    decoder_channels: list[int]

    def as_dict(self) -> dict[str, Any]:
        return copy.deepcopy(dataclasses.asdict(self))


@dataclass
class MIMOutput:
    """Result of one MambaMIM forward pass.

    Attributes:
        loss: scalar masked reconstruction loss (with gradient).
        reconstruction: (B, C, D, H, W) prediction mapped back to the input's intensities (detached;
            with ``norm_pix_loss`` it uses each 16³ patch's own mean and std from the input, as the
            paper's visualisation does).
        mask: (B, *grid) bool on the Mamba grid, True = masked.
        prediction: (B, C, D, H, W) raw decoder output (normalised intensities with ``norm_pix_loss``).
    """

    loss: torch.Tensor
    reconstruction: torch.Tensor
    mask: torch.Tensor
    prediction: torch.Tensor


class MambaMIM(nn.Module):
    """MambaMIM pre-training model around a HyMamba encoder.

    Args:
        encoder_config: keyword arguments of :class:`HyMambaEncoder` (channels, blocks, scan_order, …);
            ``None`` uses its defaults.
        mask_ratio: fraction of Mamba-grid tokens masked per sample (paper: 0.75).
        mask_token: ``"toki"`` (state-space token interpolation, Eq. 8) or ``"learnable"`` (one learnable
            token for every masked Mamba token; Table 9 "w/o TOKI").
        skip: fuse densified CNN features at every scale in the decoder (Table 9 "w/o skip" = False).
        bottom_up: every CNN stage uses the Mamba mask upsampled to its scale (§3.2). False = Table 9
            "w/o bottom-up masking" ("without a consistent mask"): the input still hides the Mamba-masked
            voxels (the reconstruction target, so nothing leaks), but each CNN stage masks its outputs
            with its own mask of the same ratio, drawn independently per stage and per step, not derived
            from the Mamba mask; the decoder fills each stage's own masked positions with mask tokens.
        norm_pix_loss: normalise the targets per ``norm_patch``³ patch (mean/variance).
        norm_patch: edge of the normalisation patch in voxels.
        decoder_channels: decoder width per level, finest first; ``None`` = 16·2^i.

    Example::

        model = MambaMIM(mask_ratio=0.75)  # the published HyMamba encoder
        out = model(torch.randn(2, 1, 96, 96, 96))  # MIMOutput: out.loss, out.reconstruction, out.mask
        out.loss.backward()
    """

    def __init__(
        self,
        encoder_config: dict[str, Any] | None = None,
        mask_ratio: float = 0.75,
        mask_token: str = "toki",
        skip: bool = True,
        bottom_up: bool = True,
        norm_pix_loss: bool = True,
        norm_patch: int = 16,
        decoder_channels: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if mask_token not in MASK_TOKENS:
            raise InvalidInput(f"unknown mask_token {mask_token!r}; valid: {', '.join(MASK_TOKENS)}")
        if not 0.0 < float(mask_ratio) < 1.0:
            raise InvalidInput(f"mask_ratio must be in (0, 1), got {mask_ratio}")
        if int(norm_patch) < 1:
            raise InvalidInput(f"norm_patch must be >= 1, got {norm_patch}")
        self.encoder = HyMambaEncoder(**(encoder_config or {}))
        channels = self.encoder.feature_channels  # skips at levels 0..L-1, then the Mamba map
        levels = len(channels)
        if decoder_channels is None:
            decoder_channels = tuple(16 * 2**i for i in range(levels))
        self.config = MambaMIMConfig(
            encoder_config=copy.deepcopy(dict(encoder_config or {})),
            mask_ratio=float(mask_ratio),
            mask_token=mask_token,
            skip=bool(skip),
            bottom_up=bool(bottom_up),
            norm_pix_loss=bool(norm_pix_loss),
            norm_patch=int(norm_patch),
            decoder_channels=[int(c) for c in decoder_channels],
        )
        self.mask_ratio = float(mask_ratio)
        self.bottom_up = bool(bottom_up)
        self.norm_pix_loss = bool(norm_pix_loss)
        self.norm_patch = int(norm_patch)
        self.in_channels = self.encoder.in_channels
        self.size_multiple = self.encoder.size_multiple
        if mask_token == "toki":
            self.toki = TOKI(channels[-1])
        else:
            self.mamba_mask_token = nn.Parameter(
                nn.init.trunc_normal_(torch.zeros(channels[-1]), std=0.02, a=-0.02, b=0.02)
            )
        self.decoder = MIMDecoder(channels, decoder_channels, out_channels=self.in_channels, skip=skip)

    def encoder_state_dict(self) -> dict[str, torch.Tensor]:
        """Encoder weights under ``encoder.*``, the names ``HyMamba`` uses (fine-tuning loads them as is)."""
        return {f"encoder.{k}": v for k, v in self.encoder.state_dict().items()}

    def level_masks(self, mask: torch.Tensor, size: Sequence[int]) -> list[torch.Tensor]:
        """The Mamba-grid ``mask`` upsampled (nearest) to every level, (B, 1, *size_i); level 0 = input."""
        return [upsample_mask(mask, [s // 2**i for s in size]) for i in range(len(self.encoder.stages))]

    def independent_level_masks(
        self, batch: int, size: Sequence[int], generator: torch.Generator | None, device: torch.device
    ) -> list[torch.Tensor]:
        """One random token-grid mask of ``mask_ratio`` per CNN level, drawn independently, upsampled to
        that level's size (B, 1, *size_i): the masks of the "w/o bottom-up masking" ablation."""
        grid = [s // self.size_multiple for s in size]
        return [
            upsample_mask(random_token_mask(batch, grid, self.mask_ratio, generator), level_size).to(device)
            for level_size in ([s // 2**i for s in size] for i in range(len(self.encoder.stages)))
        ]

    def fill_masked_tokens(self, sequence: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
        """Fill the masked slots of a scan-ordered (B, N, C) Mamba output (TOKI or the learnable token)."""
        if self.config.mask_token == "toki":
            return self.toki(sequence, masked)
        return torch.where(masked.unsqueeze(-1), self.mamba_mask_token.to(sequence.dtype), sequence)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> MIMOutput:
        """Mask ``x`` (B, C, D, H, W), reconstruct it and score the masked voxels.

        Args:
            x: image batch, spatial size a multiple of 16 (e.g. 96³ crops).
            mask: optional (B, *grid) bool mask on the Mamba grid (True = masked); drawn at random with
                ``mask_ratio`` and ``generator`` otherwise.
            generator: random generator for the mask (reproducible masks; CPU by default).
        """
        check_input(x, self.in_channels, self.size_multiple, type(self).__name__)
        x = channels_last(x)
        size = tuple(x.shape[2:])
        grid = tuple(s // self.size_multiple for s in size)
        if mask is None:
            mask = random_token_mask(x.shape[0], grid, self.mask_ratio, generator)
        if tuple(mask.shape) != (x.shape[0], *grid):
            raise InvalidInput(f"mask must have shape {(x.shape[0], *grid)} for input {tuple(x.shape)}")
        mask = mask.to(device=x.device, dtype=torch.bool)
        masks = self.level_masks(mask, size)
        if self.bottom_up:
            features = cnn_features(self.encoder, x, masks)
        else:
            hidden = x * (~masks[0]).to(x.dtype)  # the reconstruction target never enters the encoder
            stage_masks = self.independent_level_masks(x.shape[0], size, generator, x.device)
            features = cnn_features(self.encoder, hidden, stage_masks)
        bottom = features[-1]
        sequence, masked_seq, inverse = visible_mamba_sequence(self.encoder.mamba, bottom, mask)
        sequence = self.fill_masked_tokens(sequence, masked_seq)[:, inverse]
        features[-1] = sequence.transpose(1, 2).reshape(bottom.shape[0], -1, *grid)

        prediction = self.decoder(features, masks if self.bottom_up else stage_masks)
        loss = mim_loss(prediction, x, masks[0], self.norm_pix_loss, self.norm_patch)
        with torch.no_grad():
            reconstruction = (
                denormalize_patches(prediction.float(), x.float(), self.norm_patch)
                if self.norm_pix_loss
                else prediction.float()
            )
        return MIMOutput(loss=loss, reconstruction=reconstruction, mask=mask, prediction=prediction)

    @classmethod
    def from_checkpoint(cls, path: str | Path, map_location: str | torch.device = "cpu") -> MambaMIM:
        """Rebuild the model of a pre-training checkpoint (``format: mambamim-pretrain``) with its weights."""
        return cls.from_payload(load_pretrain_checkpoint(path, map_location), path)

    @classmethod
    def from_payload(cls, payload: dict[str, Any], path: str | Path) -> MambaMIM:
        """Build from an already loaded pre-training payload (``config["model"]`` + ``model`` weights);
        ``path`` only names the file in error messages."""
        config = (payload.get("config") or {}).get("model")
        if not isinstance(config, dict) or not isinstance(payload.get("model"), dict):
            raise InvalidInput(f"checkpoint {path} lacks config['model'] or the 'model' weights")
        try:
            model = cls(**config)
        except (TypeError, ValueError) as exc:
            raise InvalidInput(
                f"checkpoint {path}: cannot build MambaMIM from config['model']: {exc}"
            ) from None
        mismatch = strict_mismatch(model, payload["model"])
        if mismatch is not None:
            raise InvalidInput(
                f"checkpoint {path}: its weights do not fit its own MambaMIM config: "
                f"{mismatch}"
            )
        model.load_state_dict(payload["model"])
        return model


def load_pretrain_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a pre-training checkpoint payload (weights only), refusing any other kind of file."""
    return load_checkpoint(path, map_location=map_location, expected_format=PRETRAIN_FORMAT)
