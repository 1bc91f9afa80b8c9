"""Reconstruction figure in the style of MambaMIM's Fig. 9: original, masked input and reconstruction.

Rows are the axial, coronal and sagittal planes through the volume centre, drawn from model-space
arrays (RAS axes, isotropic spacing, so pixels are square) in radiological convention: patient right on
the image's left, anterior / superior up. Panels share one scale, so a row's panels line up exactly.
Masked patches are tinted in the masked input (they are 0, the same black as air, otherwise) and
outlined in the reconstruction. A footer states the checkpoint, mask ratio, seed, display window and
error, and how the masked patches were filled: with ``norm_pix_loss`` the prediction is de-normalised
with each masked patch's *true* mean and standard deviation (as the MambaMIM and MAE figures do), which
hands the model every patch's brightness and contrast and makes even an untrained model look plausible;
``raw`` adds the decoder's raw output as a column. Rendered with matplotlib's Agg canvas (no display
needed), as PNG (``dpi``) or SVG by the path's suffix.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mambamim.errors import InvalidInput
from mambamim.safe_write import safe_write

MASK_TINT = (0.15, 0.55, 1.0, 0.55)  # RGBA over masked patches in the masked input
OUTLINE = "#ffd21f"
FORMATS = ("png", "svg")


@dataclass
class FigureInfo:
    """What the footer states. ``window``: the display range in intensity units (e.g. "-175..250 HU")."""

    checkpoint: str = ""
    mask_ratio: float | None = None
    seed: int | None = None
    window: str = ""
    masked_mse: float | None = None  # the model's loss on the masked voxels (its training objective)
    norm_pix_loss: bool = True
    norm_patch: int = 16


def _planes(volume: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """Axial, coronal and sagittal centre slices of an (R, A, S)-indexed volume, ready for ``imshow``
    with ``origin="lower"``."""
    i, j, k = (s // 2 for s in volume.shape)
    return [
        ("axial", volume[::-1, :, k].T),  # rows: A (up), columns: R -> L
        ("coronal", volume[::-1, j, :].T),  # rows: S (up), columns: R -> L
        ("sagittal", volume[i, ::-1, :].T),  # rows: S (up), columns: A -> P
    ]


def fill_statement(info: FigureInfo) -> str:
    if not info.norm_pix_loss:
        return "Masked patches: the model's prediction as it is (no per-patch normalisation)."
    p = info.norm_patch
    return (
        f"Masked patches: prediction de-normalised with each {p}³ patch's TRUE mean and std "
        "(as the MambaMIM/MAE figures do).\nBrightness and contrast of every patch come from the original, "
        "so even an untrained model looks plausible; the raw column shows the model's own output."
    )


def footer_text(info: FigureInfo, masked_error: float | None) -> str:
    parts = []
    if info.checkpoint:
        parts.append(f"checkpoint {info.checkpoint}")
    if info.mask_ratio is not None:
        parts.append(f"mask ratio {info.mask_ratio:g}")
    if info.seed is not None:
        parts.append(f"seed {info.seed}")
    if info.window:
        parts.append(f"window {info.window}")
    if info.masked_mse is not None:
        parts.append(f"masked loss {info.masked_mse:.4f}")
    if masked_error is not None:
        parts.append(f"masked MSE of the shown reconstruction {masked_error:.4f} (model intensity units)")
    return "; ".join(parts) + "\n" + fill_statement(info)


def save_reconstruction_figure(
    path: str | Path,
    original: np.ndarray,
    masked: np.ndarray,
    reconstruction: np.ndarray,
    title: str = "",
    *,
    mask: np.ndarray | None = None,
    raw: np.ndarray | None = None,
    info: FigureInfo | None = None,
    display_range: tuple[float, float] | None = None,
    dpi: int = 200,
) -> Path:
    """Write the figure (planes × [original, masked input, reconstruction, raw?]) atomically to ``path``.

    All arrays are model-space volumes of one shape; ``mask`` (1 = masked) tints and outlines the masked
    patches; ``raw`` (the decoder's raw output) adds a column with its own grey range. ``display_range``:
    grey range of the other columns (default: the 1st-99th percentile of ``original``). The format is
    the suffix of ``path`` (``.png`` or ``.svg``).
    """
    # A bare Figure renders through Agg without touching pyplot's global backend (safe inside Slicer).
    from matplotlib.figure import Figure

    volumes = [original, masked, reconstruction] + [v for v in (mask, raw) if v is not None]
    if original.ndim != 3 or any(v.shape != original.shape for v in volumes):
        raise InvalidInput(
            f"figure volumes must be 3-D and of one shape, got {[tuple(v.shape) for v in volumes]}"
        )
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise InvalidInput(f"figure {path}: unsupported format {fmt or '(none)'}; use .png or .svg")
    info = info or FigureInfo()
    if display_range is None:
        display_range = tuple(np.percentile(original, [1, 99]))
    low, high = float(display_range[0]), float(display_range[1])
    high = high if high > low else low + 1.0
    columns = [("original", original), ("masked input", masked), ("reconstruction", reconstruction)]
    if raw is not None:
        columns.append(("raw prediction" + (" (patch-normalised)" if info.norm_pix_loss else ""), raw))
    masked_error = None
    if mask is not None and mask.any():
        hidden = mask.astype(bool)
        masked_error = float(np.mean((reconstruction[hidden] - original[hidden]) ** 2))
    planes = _planes(original)
    heights = [image.shape[0] for _, image in planes]
    widths = max(image.shape[1] for _, image in planes)
    cell = 2.6  # inches per panel side, largest plane
    fig = Figure(figsize=(cell * len(columns), cell * sum(heights) / widths + 1.15))
    grid = fig.add_gridspec(3, len(columns), height_ratios=heights, hspace=0.04, wspace=0.03)
    fig.subplots_adjust(
        left=0.04, right=0.99, top=1 - 0.55 / fig.get_figheight(), bottom=0.6 / fig.get_figheight()
    )
    mask_planes = _planes(mask.astype(np.float32)) if mask is not None else None
    for col, (name, volume) in enumerate(columns):
        is_raw = raw is not None and volume is raw
        vmin, vmax = np.percentile(raw, [1, 99]) if is_raw else (low, high)
        for row, (plane, image) in enumerate(_planes(volume)):
            ax = fig.add_subplot(grid[row, col])
            # Same x range for every panel of a row: planes narrower than the widest are centred.
            extent = (0, image.shape[1], 0, image.shape[0])
            ax.imshow(
                image,
                cmap="gray",
                vmin=vmin,
                vmax=vmax,
                origin="lower",
                interpolation="nearest",
                extent=extent,
            )
            if mask_planes is not None:
                hidden = mask_planes[row][1]
                if name == "masked input":
                    tint = np.zeros((*hidden.shape, 4))
                    tint[hidden > 0.5] = MASK_TINT
                    ax.imshow(tint, origin="lower", interpolation="nearest", extent=extent)
                elif col > 1 and hidden.any() and not hidden.all():
                    ax.contour(
                        hidden, levels=[0.5], colors=OUTLINE, linewidths=0.4, origin="lower", extent=extent
                    )
            pad = (widths - image.shape[1]) / 2
            ax.set_xlim(-pad, image.shape[1] + pad)
            ax.set_ylim(0, image.shape[0])
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():  # no frame around the padding of narrower planes
                spine.set_visible(False)
            if row == 0:
                ax.set_title(name, fontsize=9)
            if col == 0:
                ax.set_ylabel(plane, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10, y=1 - 0.12 / fig.get_figheight(), va="top")
    footer = footer_text(info, masked_error)  # wrapped: its first line is wider than a 3-column figure
    fig.text(0.01, 0.08 / fig.get_figheight(), footer, fontsize=6.5, va="bottom", wrap=True)
    with safe_write(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format=fmt)
    return path


@dataclass
class FigureOptions:
    """How ``reconstruct`` draws its figure: ``format`` png or svg, ``dpi`` for PNG, ``raw`` column."""

    format: str = "png"
    dpi: int = 200
    raw: bool = False

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise InvalidInput(f"unknown figure format {self.format!r}; valid: {', '.join(FORMATS)}")
        if not 30 <= int(self.dpi) <= 1200:
            raise InvalidInput(f"figure dpi must be in 30..1200, got {self.dpi}")


def figure_details(checkpoint, model, mask_ratio: float, seed: int, loss: float, intensity: dict) -> dict:
    """``info`` and ``display_range`` of a reconstruction: the footer facts and the checkpoint's window.

    A CT window spec is shown over its whole range (model values 0..1 = its HU window); a z-score spec
    keeps the default percentile range.
    """
    window, display = "1st-99th percentile (z-score units)", None
    if intensity["type"] == "window":
        window, display = (
            f"{intensity['lower']:g}..{intensity['upper']:g} HU (the checkpoint's CT window)",
            (0, 1),
        )
    info = FigureInfo(
        checkpoint=Path(checkpoint).name,
        mask_ratio=mask_ratio,
        seed=seed,
        window=window,
        masked_mse=loss,
        norm_pix_loss=bool(getattr(model, "norm_pix_loss", False)),
        norm_patch=int(getattr(model, "norm_patch", 16)),
    )
    return {"info": info, "display_range": display}
