"""A network trained on arrays whose spatial axes come in another order than ours.

Our model space is indexed ``[i, j, k]`` = (x, y, z) in RAS (``mambamim.infer.preprocess``). nnU-Net v2
reads NIfTI/NRRD files with SimpleITK, whose arrays are indexed ``[z, y, x]``, and may transpose them
further (``transpose_forward`` in its plans). Convolutions are not invariant to swapping axes and the
Mamba layers scan tokens in raster order of their own grid, so a network trained there must see its
input in that order: this wrapper permutes the axes on the way in and back on the way out.

Example::

    model = PermutedAxes(1, 3, network="hymamba", axes=(2, 1, 0))
    logits = model(torch.zeros(1, 1, 32, 48, 64))  # the HyMamba inside runs on (64, 48, 32)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn


class PermutedAxes(nn.Module):
    """Runs ``network`` with its spatial axis ``n`` fed by our axis ``axes[n]``; weights under ``network.*``.

    Args:
        in_channels, out_channels: passed to the wrapped network.
        network: registry name of the wrapped network (``mambamim.nn.registry.MODELS``).
        network_config: its other constructor arguments.
        axes: a permutation of (0, 1, 2); the default reverses the axes (SimpleITK's ``[z, y, x]``).
    """

    size_multiple: int = 16  # of the default network; instances hold the wrapped network's

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 14,
        network: str = "hymamba",
        network_config: dict[str, Any] | None = None,
        axes: Sequence[int] = (2, 1, 0),
    ) -> None:
        from mambamim.nn.registry import build_model

        super().__init__()
        if sorted(axes) != [0, 1, 2]:
            raise ValueError(f"axes must be a permutation of (0, 1, 2), got {tuple(axes)!r}")
        if network == "permuted_axes":
            raise ValueError("PermutedAxes cannot wrap itself")
        self.network = build_model(
            network, in_channels=in_channels, out_channels=out_channels, **dict(network_config or {})
        )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.size_multiple = self.network.size_multiple
        self.forward_order = (0, 1, *(a + 2 for a in axes))
        self.backward_order = (0, 1, *(list(axes).index(n) + 2 for n in range(3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        y = self.network(x.permute(self.forward_order))
        if isinstance(y, (list, tuple)):  # deep supervision (train mode)
            return [t.permute(self.backward_order) for t in y]
        return y.permute(self.backward_order)
