"""Read and write 3-D medical volumes as ``SimpleITK.Image`` (LPS world coordinates, like ITK/Slicer).

Readers: NIfTI and NRRD (SimpleITK), MGH/MGZ (nibabel, converted from RAS to LPS), DICOM series
folders (GDCM through ``ImageSeriesReader``: slices sorted by position, rescale slope/intercept
applied, direction cosines kept; the DICOM Modality tag is kept as the image's ``0008|0060`` metadata). Files
are checked for what they hold before any reader converts them (:mod:`mambamim.data.file_integrity`).
Writers: NIfTI or NRRD through :func:`mambamim.safe_write.safe_write`, so a failed or interrupted write
never leaves a partial file at, or beside, the requested path.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from mambamim.data.file_integrity import ImageReadError, verify_image_file
from mambamim.errors import InvalidInput
from mambamim.safe_write import STAGING_PREFIX, safe_write

logger = logging.getLogger(__name__)

READ_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd", ".mgh", ".mgz")
WRITE_SUFFIXES = (".nii", ".nii.gz", ".nrrd")
# Slices further than this fraction of the median gap from a regular grid mean missing or tilted slices.
_SLICE_GAP_TOLERANCE = 0.05
DICOM_MODALITY_KEY = "0008|0060"


def image_suffix(path: str | Path) -> str:
    """Lower-case suffix including a double one (``.nii.gz``); empty for folders."""
    name = Path(path).name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix


def is_dicom_folder(path: str | Path) -> bool:
    """True when ``path`` is a folder that directly holds at least one DICOM series."""
    path = Path(path)
    return path.is_dir() and bool(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(path)))


def read_image(path: str | Path, *, allow_constant: bool = False) -> sitk.Image:
    """Read a 3-D scalar volume from a file or a DICOM series folder.

    Refuses (``ImageReadError`` naming the file) truncated or corrupt files and headers declaring
    more data than the file can hold (before allocating), 2-D and 4-D images, vector images, empty
    volumes, volumes containing NaN or infinite values (as stored in the file) and, unless
    ``allow_constant`` (label maps may legitimately be all background), volumes whose voxels all have
    the same value.
    """
    path = Path(path)
    if not path.exists():
        raise ImageReadError(f"input {path} does not exist")
    if path.is_dir():
        image = _read_dicom_series(path)
    else:
        verify_image_file(path)
        image = _read_with_nibabel(path) if image_suffix(path) in (".mgh", ".mgz") else _read_with_itk(path)
    return _check_volume(image, path, allow_constant=allow_constant)


def check_output_path(path: str | Path, overwrite: bool = False) -> Path:
    """Fail early (before any work) on an unsupported format, a folder, an existing file or a place
    where the output cannot be written."""
    path = Path(path)
    suffix = image_suffix(path)
    if suffix not in WRITE_SUFFIXES:
        raise InvalidInput(
            f"output {path}: unsupported format {suffix or '(none)'}; "
            "use a name ending in .nii.gz, .nii or .nrrd"
        )
    if path.is_dir():
        raise InvalidInput(f"output {path} is a folder; give a file name ending in .nii.gz or .nrrd")
    if path.exists() and not overwrite:
        raise FileExistsError(f"output {path} already exists; pass --overwrite to replace it")
    check_writable(path)
    return path


def check_writable(path: str | Path) -> None:
    """Refuse, naming ``path``, an output whose folder cannot be created or written into.

    The folder is probed by creating (and at once deleting) a file in it, which also catches read-only
    file systems and access-control lists that permission bits do not show.
    """
    path = Path(path)
    folder = path.parent
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise NotADirectoryError(f"cannot write output {path}: {existing} is not a folder")
    if existing != folder:
        if not os.access(existing, os.W_OK | os.X_OK):
            raise PermissionError(f"cannot write output {path}: cannot create folders in {existing}")
        return
    # Named like a partial copy, so a sweep removes it should the process die right here.
    probe = folder / f".write-probe.{STAGING_PREFIX}{os.getpid()}-probe"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as err:
        raise PermissionError(
            f"cannot write output {path}: the folder {folder} is not writable ({err.strerror})"
        ) from None
    os.close(fd)
    probe.unlink(missing_ok=True)


def write_image(image: sitk.Image, path: str | Path, overwrite: bool = False) -> Path:
    """Write ``image`` as NIfTI or NRRD (by suffix) atomically; refuse an existing path unless overwrite."""
    path = check_output_path(path, overwrite)
    with safe_write(path) as tmp:  # same file name, so ITK picks the format by suffix
        sitk.WriteImage(image, str(tmp), useCompression=True)
    return path


def write_csv(
    path: str | Path, fieldnames: Sequence[str], rows: Iterable[dict], overwrite: bool = False
) -> Path:
    """Write ``rows`` (dicts keyed by ``fieldnames``; extra keys ignored) as CSV via a temp file + rename."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"output {path} already exists; pass --overwrite to replace it")
    with safe_write(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(fieldnames), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def _first_line(err: Exception) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    # ITK messages start with a source location; the reason is the last line.
    return lines[-1] if lines else type(err).__name__


def _read_dicom_series(folder: Path) -> sitk.Image:
    series_ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not series_ids:
        raise ImageReadError(f"folder {folder} holds no DICOM series (and is not a readable image file)")
    files_by_series = {
        sid: sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), sid) for sid in series_ids
    }
    series_id = max(series_ids, key=lambda sid: len(files_by_series[sid]))
    files = files_by_series[series_id]
    if len(series_ids) > 1:
        others = ", ".join(
            f"{sid} ({len(files_by_series[sid])} files)" for sid in series_ids if sid != series_id
        )
        logger.warning(
            "folder %s holds %d DICOM series; reading the largest, %s (%d files); ignored: %s",
            folder,
            len(series_ids),
            series_id,
            len(files),
            others,
        )
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    reader.MetaDataDictionaryArrayUpdateOn()
    try:
        image = reader.Execute()
    except RuntimeError as err:
        raise ImageReadError(f"cannot read the DICOM series in {folder}: {_first_line(err)}") from None
    if len(files) > 2:
        _check_slice_positions(reader, len(files), folder)
    if reader.HasMetaDataKey(0, DICOM_MODALITY_KEY):
        image.SetMetaData(DICOM_MODALITY_KEY, reader.GetMetaData(0, DICOM_MODALITY_KEY).strip())
    return image


def _check_slice_positions(reader: sitk.ImageSeriesReader, n: int, folder: Path) -> None:
    """Refuse series with missing slices or uneven spacing, which one 3-D grid cannot represent."""
    try:
        positions = np.array(
            [[float(v) for v in reader.GetMetaData(i, "0020|0032").split("\\")] for i in range(n)]
        )
        cosines = np.array([float(v) for v in reader.GetMetaData(0, "0020|0037").split("\\")])
    except (RuntimeError, ValueError):
        return  # no position tags (e.g. secondary capture): nothing to check against
    normal = np.cross(cosines[:3], cosines[3:])
    gaps = np.diff(np.sort(positions @ normal))
    median = float(np.median(gaps))
    if median <= 0 or np.max(np.abs(gaps - median)) > _SLICE_GAP_TOLERANCE * median:
        raise ImageReadError(
            f"DICOM series in {folder} has uneven slice spacing "
            f"(gaps {gaps.min():.3g}..{gaps.max():.3g} mm): "
            "missing or duplicated slices; export the full series"
        )


def _read_with_itk(path: Path) -> sitk.Image:
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as err:
        raise ImageReadError(f"cannot read {path}: {_first_line(err)}") from None


def _read_with_nibabel(path: Path) -> sitk.Image:
    """Read with nibabel and rebuild an equivalent ``sitk.Image`` (RAS affine -> LPS geometry)."""
    import nibabel as nib

    try:
        img = nib.load(str(path))
        data = np.asarray(img.dataobj)
    except Exception as err:  # nibabel raises many exception types for corrupt files
        raise ImageReadError(f"cannot read {path}: {err}") from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ImageReadError(f"{path} has {data.ndim} dimensions {data.shape}; a 3-D volume is needed")
    data = data.astype(data.dtype.newbyteorder("="), copy=False)  # MGH stores big-endian; ITK wants native
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(img.affine, dtype=np.float64)
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    if np.any(spacing <= 0):
        raise ImageReadError(f"{path} has a degenerate affine (zero voxel size)")
    image = sitk.GetImageFromArray(np.ascontiguousarray(data.transpose(2, 1, 0)))
    image.SetSpacing(spacing.tolist())
    image.SetDirection((lps[:3, :3] / spacing).flatten().tolist())
    image.SetOrigin(lps[:3, 3].tolist())
    return image


def _check_volume(image: sitk.Image, path: Path, *, allow_constant: bool) -> sitk.Image:
    if image.GetDimension() == 4 and image.GetSize()[3] == 1:
        image = image[:, :, :, 0]
    if image.GetDimension() != 3:
        raise ImageReadError(
            f"{path} is a {image.GetDimension()}-D image of size {image.GetSize()}; a 3-D volume is needed"
        )
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise ImageReadError(
            f"{path} has {image.GetNumberOfComponentsPerPixel()} values per voxel "
            "(a 4-D, vector or RGB image); "
            "a 3-D scalar volume is needed"
        )
    size = image.GetSize()
    if min(size) == 0:
        raise ImageReadError(f"{path} is empty (size {size})")
    if min(size) == 1:
        raise ImageReadError(f"{path} is a single slice (size {size}); a 3-D volume is needed")
    array = sitk.GetArrayViewFromImage(image)
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        raise ImageReadError(f"{path} contains NaN or infinite voxel values")
    if not allow_constant:
        lo, hi = array.min(), array.max()
        if lo == hi:
            raise ImageReadError(f"{path} is constant (every voxel is {lo}); nothing to segment")
    return image
