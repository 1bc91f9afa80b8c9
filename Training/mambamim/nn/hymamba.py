"""HyMamba: the hybrid CNN-Mamba segmentation network of MambaMIM (Tang et al., arXiv 2408.08070, §3.1).

The default network is the authors' published ``Hybird`` (``models/network/hymamba.py`` of
github.com/FengheTan9/MambaMIM, commit 471c2f6, built by its ``build_hybird``): loading their weights
through :mod:`mambamim.infer.convert` reproduces their outputs (``Testing/nn/test_published_networks.py``
checks it against the authors' model saved as data). Every level *raises its channels before
pooling*, so each skip lives at a finer resolution than its channel count suggests. With
``channels = (C0 .. C4) = (32, 64, 128, 192, 384)`` and a 96³ window:

- encoder (their ``embeddings`` + ``mae``): 3³ stem conv ``in → C0`` at full resolution; for level
  i = 0..3 a 3³ conv ``C_i → C_{i+1}`` (their ``expend``) at resolution 1/2^i gives raw skip i, then
  max-pool ×2 and the MedNeXt blocks of level i+1 at ``C_{i+1}`` (their ``layer2..5``). A residual block
  with per-voxel LayerNorm and conv biases (their ``encoder1..4``) refines each raw skip; being part of
  the encoder, these blocks are pre-trained by MambaMIM and transferred. After level 4 (C4 at 1/16, 6³
  tokens) a Vision-Mamba stage of four pre-norm Mamba layers with a fixed 3-D sin-cos position
  embedding and no final norm (their ``mae``) gives the bottleneck. Skips: C1 at 1/1, C2 at 1/2,
  C3 at 1/4, C4 at 1/8.
- decoder (MONAI ``UnetrUpBlock`` steps): transposed conv ×2 (no bias), concatenation with the refined
  skip and a residual block with parameter-free instance norms (C4 → C4 at 1/8, → C3 at 1/4, → C2 at
  1/2, → C1 at 1/1); a residual block C1 → C0 with LayerNorm and biases, and a 1³ head with bias.
  Defaults: 41,441,774 trainable parameters (the published model's 41,841,134 less the backward-scan
  parameters its forward never uses and its fixed position embedding) and about 2.1 TFLOP per 96³ window.

Options that differ from the published network (never the default): ``blocks[0] > 0`` adds MedNeXt
blocks at C0 at full resolution (the published code accepts a level-0 depth but builds none),
``final_norm=True`` a LayerNorm after the Mamba stage, ``skip_norm`` / ``norm`` / ``out_norm`` other
norm types (``instance`` = affine instance norm, as our earlier layout), ``bidirectional`` BiMamba layers.

The whole CNN runs in channels-last memory order, where 3-D convolutions are fastest on CPU and the
per-voxel LayerNorm and 1³ projections of MedNeXt blocks are plain last-dimension ops on a
(B, D, H, W, C) view, with no permute copies.

Example::

    model = HyMamba(in_channels=1, out_channels=14)
    logits = model(torch.zeros(1, 1, 96, 96, 96))  # (1, 14, 96, 96, 96)
"""

from __future__ import annotations

import torch
from torch import nn

from mambamim.nn.blocks import ResidualConvBlock, UpBlock, channels_last, check_input, pointwise_conv
from mambamim.nn.vision_mamba import VisionMambaStage


class MedNeXtBlock(nn.Module):
    """MedNeXt block (Roy et al. 2023): depthwise k³ conv, per-voxel channel LayerNorm, 1³ expansion
    to ``expansion``·C, GELU, 1³ compression to C, residual.

    Guarantee relied on by MambaMIM's sparse encoder: ``dwconv`` is the only op that mixes voxels and
    the norm is per voxel, so ``mask * block(mask * x)`` never reads a masked voxel's value.
    The 1³ projections are ``nn.Linear`` layers applied on the channels-last (B, D, H, W, C) view.
    """

    def __init__(self, channels: int, expansion: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.dwconv = nn.Conv3d(channels, channels, kernel_size, padding=kernel_size // 2, groups=channels)
        self.norm = nn.LayerNorm(channels, eps=1e-6)
        self.pw1 = nn.Linear(channels, expansion * channels)
        self.act = nn.GELU()
        self.pw2 = nn.Linear(expansion * channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 4, 1)
        y = self.pw2(self.act(self.pw1(self.norm(y))))
        y += x.permute(0, 2, 3, 4, 1)  # in place: a Linear's backward does not need its output
        return y.permute(0, 4, 1, 2, 3)


class Downsample(nn.Module):
    """Level transition of the published layout: a 3³ conv raising the channels at the current
    resolution (its output is the level's skip), then max-pool ×2."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_channels, out_channels, 3, padding=1)
        self.pool = nn.MaxPool3d(2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(skip, pooled)``: the raised map at the input resolution and its ×2 max-pool."""
        # The CPU conv falls back to a contiguous-output kernel on small maps; keep channels-last.
        skip = channels_last(self.conv(x))
        return skip, self.pool(skip)


def _check_levels(channels, blocks, expansion) -> None:
    if not len(channels) == len(blocks) == len(expansion) or len(channels) < 2:
        raise ValueError(
            "channels, blocks and expansion must have the same length (>= 2, one entry per level), got "
            f"channels={tuple(channels)}, blocks={tuple(blocks)}, expansion={tuple(expansion)}"
        )


class HyMambaEncoder(nn.Module):
    """HyMamba encoder (MambaMIM §3.1, published layout); forward(x) returns [skip0 .. skip3, bottleneck].

    Dataflow: ``f = stem(x)``; for i in 0..3: ``f = stages[i](f)``, raw skip ``s_i = downsamples[i].conv(f)``
    (``C_{i+1}`` channels at 1/2^i), ``f = downsamples[i].pool(s_i)``; then ``f = stages[4](f)`` and the
    bottleneck ``mamba(f)`` (C4 at 1/16). The returned skips are ``skip_blocks[i](s_i)``.
    ``stages[i]`` holds the MedNeXt blocks of level i (C_i at 1/2^i; none at level 0 by default, as
    published); ``feature_channels`` lists the channels of the returned maps, (C1, C2, C3, C4, C4).

    Args:
        in_channels: input image channels.
        channels: width of each level.
        blocks: MedNeXt blocks per level (the published ``depths``, except that its level-0 entry is
            unused there: ``(0, 2, 2, 2, 1)`` is ``build_hybird``'s ``(1, 2, 2, 2, 1)``).
        expansion: MedNeXt expansion ratio per level.
        kernel_size: depthwise kernel of the MedNeXt blocks.
        mamba_depth: Mamba layers at the deepest level.
        d_state, d_conv, expand: Mamba hyper-parameters.
        scan_order, seed: token order of the Mamba stage (see :mod:`mambamim.nn.scan_orders`).
        bidirectional: BiMamba layers instead of forward-only ones (not published).
        mlp_ratio: MLP width of the Mamba layers (2, as published).
        skip_norm: norm of the skip-refining residual blocks (published: ``layer``, per voxel; the only
            one MambaMIM's sparse pre-training accepts).
        final_norm: LayerNorm after the Mamba stage (not published).

    Example::

        encoder = HyMambaEncoder(channels=(8, 16, 32, 48, 96))
        *skips, bottleneck = encoder(torch.randn(1, 1, 64, 64, 64))  # bottleneck: (1, 96, 4, 4, 4)
    """

    def __init__(
        self,
        in_channels: int = 1,
        channels: tuple[int, ...] = (32, 64, 128, 192, 384),
        blocks: tuple[int, ...] = (0, 2, 2, 2, 1),
        expansion: tuple[int, ...] = (2, 2, 4, 4, 4),
        kernel_size: int = 3,
        mamba_depth: int = 4,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        scan_order: str = "raster",
        seed: int = 0,
        bidirectional: bool = False,
        mlp_ratio: float = 2.0,
        skip_norm: str = "layer",
        final_norm: bool = False,
    ) -> None:
        super().__init__()
        _check_levels(channels, blocks, expansion)
        self.in_channels = in_channels
        self.channels = tuple(channels)
        self.feature_channels = (*self.channels[1:], self.channels[-1])
        self.size_multiple = 2 ** (len(channels) - 1)
        self.skip_norm = skip_norm
        self.stem = nn.Conv3d(in_channels, channels[0], 3, padding=1)
        self.stages = nn.ModuleList(
            nn.ModuleList(MedNeXtBlock(c, r, kernel_size) for _ in range(n))
            for c, n, r in zip(channels, blocks, expansion)
        )
        self.downsamples = nn.ModuleList(
            Downsample(channels[i], channels[i + 1]) for i in range(len(channels) - 1)
        )
        self.skip_blocks = nn.ModuleList(
            ResidualConvBlock(c, c, norm=skip_norm, bias=True) for c in self.channels[1:]
        )
        self.mamba = VisionMambaStage(
            channels[-1],
            depth=mamba_depth,
            d_state=d_state,
            d_conv=d_conv,
            expand=expand,
            scan_order=scan_order,
            seed=seed,
            bidirectional=bidirectional,
            mlp_ratio=mlp_ratio,
            final_norm=final_norm,
        )

    def features(self, x: torch.Tensor, refine_skips: bool = True) -> list[torch.Tensor]:
        """[skip0 .. skip3, bottleneck]; with ``refine_skips=False`` the raw skips, before ``skip_blocks``
        (the segmentation decoder refines them straight into its concatenation buffers)."""
        check_input(x, self.in_channels, self.size_multiple, type(self).__name__)
        f = channels_last(self.stem(x))
        features = []
        for stage, down, refine in zip(self.stages, self.downsamples, self.skip_blocks):
            for block in stage:
                f = block(f)
            skip, f = down(f)
            features.append(refine(skip) if refine_skips else skip)
        for block in self.stages[-1]:
            f = block(f)
        features.append(self.mamba(f))
        return features

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.features(x)


class HyMamba(nn.Module):
    """HyMamba segmentation network (MambaMIM §3.1): :class:`HyMambaEncoder` + UNETR-style decoder,
    as published (see the module docstring).

    Decoder modules: ``up_blocks[i]`` (transposed conv ×2 from ``feature_channels[i+1]``, concatenated
    with the refined skip i, residual block to ``feature_channels[i]``; their ``decoder{i+2}``),
    ``out_block`` (residual block ``feature_channels[0] → channels[0]`` at full resolution, with conv
    biases; their ``decoder1``) and ``head`` (1³ conv to the logits; their ``decoder.out``).

    Args:
        in_channels: input image channels.
        out_channels: number of classes (logit channels).
        norm: norm of the up blocks' residual blocks (published: ``instance_noaffine``, MONAI's default).
        out_norm: norm of ``out_block`` (published: ``layer``).
        Remaining arguments: see :class:`HyMambaEncoder`.

    forward(x (B, in_channels, D, H, W)) -> logits (B, out_channels, D, H, W); D, H, W multiples of 16.

    Example::

        net = HyMamba(in_channels=1, out_channels=14)  # the published size, 13 BTCV organs + background
        logits = net(torch.randn(1, 1, 96, 96, 96))  # (1, 14, 96, 96, 96)
    """

    size_multiple: int = 16

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 14,
        channels: tuple[int, ...] = (32, 64, 128, 192, 384),
        blocks: tuple[int, ...] = (0, 2, 2, 2, 1),
        expansion: tuple[int, ...] = (2, 2, 4, 4, 4),
        kernel_size: int = 3,
        mamba_depth: int = 4,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        scan_order: str = "raster",
        seed: int = 0,
        bidirectional: bool = False,
        mlp_ratio: float = 2.0,
        skip_norm: str = "layer",
        final_norm: bool = False,
        norm: str = "instance_noaffine",
        out_norm: str = "layer",
    ) -> None:
        super().__init__()
        self.encoder = HyMambaEncoder(
            in_channels=in_channels,
            channels=channels,
            blocks=blocks,
            expansion=expansion,
            kernel_size=kernel_size,
            mamba_depth=mamba_depth,
            d_state=d_state,
            d_conv=d_conv,
            expand=expand,
            scan_order=scan_order,
            seed=seed,
            bidirectional=bidirectional,
            mlp_ratio=mlp_ratio,
            skip_norm=skip_norm,
            final_norm=final_norm,
        )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.size_multiple = self.encoder.size_multiple
        widths = self.encoder.feature_channels
        self.up_blocks = nn.ModuleList(
            UpBlock(widths[i + 1], widths[i], widths[i], norm=norm) for i in range(len(widths) - 1)
        )
        self.out_block = ResidualConvBlock(widths[0], channels[0], norm=out_norm, bias=True)
        self.head = nn.Conv3d(channels[0], out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        *skips, y = self.encoder.features(x, refine_skips=False)
        while skips:  # pop: each full-size skip is freed as soon as it has been used
            i = len(skips) - 1
            y = self.up_blocks[i](y, skips.pop(), self.encoder.skip_blocks[i])
        return pointwise_conv(self.out_block(y), self.head).contiguous()
