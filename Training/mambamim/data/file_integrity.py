"""Check what an image file *holds* before any reader converts it (or allocates for it).

Readers hide damage: ITK's NIfTI reader turns NaN voxels into 0 and reads a truncated ``.nii.gz`` as
zeros, and any reader allocates what the header declares before it notices the data are missing. So
before reading, :func:`verify_image_file`:

1. reads only the header (NIfTI and MGH with nibabel, NRRD and MetaImage with ITK plus their text
   header) and checks the declared voxel data against what can exist: at most the bytes after the
   header for raw data; at most ``MAX_DEFLATE_RATIO`` times the file size for gzip/zlib data (deflate
   cannot compress better, RFC 1951); never more than the RAM available;
2. for gzip files (``.nii.gz``, ``.mgz``) streams the whole file once, in bounded memory: the gzip
   stream must end cleanly (end marker, CRC and length) and hold at least the declared data;
3. checks floating-point voxels as stored in the file for NaN and infinities, and a NIfTI scaling
   (``scl_slope`` / ``scl_inter``) for infinities. NRRD and MetaImage readers keep non-finite values, so
   the check after reading (:func:`mambamim.data.imageio.read_image`) sees them as stored; DICOM pixel data
   are integers.
"""

from __future__ import annotations

import gzip
import math
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil

from mambamim.cpu_memory import format_bytes
from mambamim.errors import MambaMIMError

# Deflate's best case: a 258-byte match per 2-bit code, i.e. at most ~1032 bytes out per byte in.
MAX_DEFLATE_RATIO = 1032
_CHUNK = 1 << 22


class ImageReadError(MambaMIMError, ValueError):
    """The file or folder is not a usable 3-D volume; the message names it and says why."""


@dataclass(frozen=True)
class DeclaredData:
    """What a header says the voxel data are, and where they are stored."""

    shape: tuple[int, ...]
    dtype: np.dtype  # per component, in the file's byte order
    components: int
    data_file: Path
    offset: int  # bytes before the voxel data in ``data_file`` (uncompressed stream for gzip)
    compression: str | None  # None, "gzip" (the whole file), "deflate" (data only), "other"
    scaling: tuple[float, float] = (1.0, 0.0)

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.components * self.dtype.itemsize


def verify_image_file(path: Path) -> None:
    """Refuse (``ImageReadError`` naming ``path``) files whose content cannot be what the header says."""
    declared = _declared_data(path)
    if declared is None:
        return
    _check_declared_size(path, declared)
    slope, inter = declared.scaling
    if not (math.isfinite(slope) or math.isnan(slope)) or not (math.isfinite(inter) or math.isnan(inter)):
        raise ImageReadError(
            f"{path} has a non-finite intensity scaling (scl_slope {slope}, scl_inter {inter})"
        )
    if declared.compression == "gzip":
        _scan_gzip(path, declared)
    elif declared.compression is None and declared.dtype.kind in "fc":
        with open(declared.data_file, "rb") as handle:
            handle.seek(declared.offset)
            _scan_stream(path, declared, iter(lambda: handle.read(_CHUNK), b""))


def _declared_data(path: Path) -> DeclaredData | None:
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz", ".mgh", ".mgz")):
        return _nibabel_header(path, gz=name.endswith((".gz", ".mgz")))
    if name.endswith((".nrrd", ".nhdr", ".mha", ".mhd")):
        return _itk_header(path)
    return None


def _nibabel_header(path: Path, gz: bool) -> DeclaredData:
    import nibabel as nib

    try:
        image = nib.load(str(path))
        header = image.header
        shape = tuple(int(s) for s in header.get_data_shape())
        dtype = np.dtype(header.get_data_dtype())
        # Where the reader really starts (a single-file NIfTI with vox_offset 0 starts after the header).
        offset = int(getattr(image.dataobj, "offset", header.get_data_offset()))
        slope, inter = header.get_slope_inter() if hasattr(header, "get_slope_inter") else (None, None)
    except Exception as err:  # nibabel raises many exception types for corrupt headers
        raise ImageReadError(f"cannot read the header of {path}: {err}") from None
    if gz and _magic(path) != b"\x1f\x8b":
        gz = False  # a .gz name on an uncompressed file: nibabel and ITK both sniff the content
    scaling = (1.0 if slope is None else float(slope), 0.0 if inter is None else float(inter))
    return DeclaredData(shape, dtype, 1, path, offset, "gzip" if gz else None, scaling)


def _itk_header(path: Path) -> DeclaredData:
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as err:
        reason = [line for line in str(err).splitlines() if line.strip()]
        raise ImageReadError(f"cannot read the header of {path}: {reason[-1] if reason else err}") from None
    shape = tuple(int(s) for s in reader.GetSize())
    components = int(reader.GetNumberOfComponents())
    probe = sitk.Image([1] * len(shape), reader.GetPixelID(), components) if components > 1 else None
    if probe is None:
        probe = sitk.Image([1] * len(shape), reader.GetPixelID())
    dtype = sitk.GetArrayViewFromImage(probe).dtype
    fields, header_bytes = _text_header(path)
    if path.suffix.lower() in (".nrrd", ".nhdr"):
        encoding = fields.get("encoding", "raw").lower()
        data_name = fields.get("data file") or fields.get("datafile")
        compression = None if encoding == "raw" else "deflate" if encoding in ("gzip", "gz") else "other"
        big_endian = fields.get("endian", "little").lower() == "big"
    else:
        compressed = fields.get("compresseddata", "false").lower() == "true"
        data_name = fields.get("elementdatafile")
        data_name = None if data_name in (None, "LOCAL", "local", "Local") else data_name
        compression = "deflate" if compressed else None
        msb = fields.get("binarydatabyteordermsb") or fields.get("elementbyteordermsb") or "false"
        big_endian = msb.lower() == "true"
    dtype = dtype.newbyteorder(">" if big_endian else "<")
    if data_name is None:
        data_file, offset = path, header_bytes
    elif " " in data_name.strip() or "%" in data_name or data_name.upper().startswith("LIST"):
        return DeclaredData(shape, dtype, components, path, 0, "other")  # file lists: ITK checks them
    else:
        data_file, offset = path.parent / data_name.strip(), 0
    return DeclaredData(shape, dtype, components, data_file, offset, compression)


def _text_header(path: Path) -> tuple[dict[str, str], int]:
    """Lower-cased ``key: value`` / ``Key = Value`` fields of a NRRD or MetaImage header, its length."""
    with open(path, "rb") as handle:
        head = handle.read(1 << 16)
    fields: dict[str, str] = {}
    position = 0
    for raw_line in head.splitlines(keepends=True):
        position += len(raw_line)
        line = raw_line.decode("latin-1").strip()
        if not line and path.suffix.lower() == ".nrrd":
            break  # a blank line ends an attached NRRD header
        match = re.match(r"([A-Za-z ]+?)\s*(?::=|:|=)\s*(.*)$", line)
        if match:
            fields[match.group(1).strip().lower()] = match.group(2).strip()
        if line.lower().startswith("elementdatafile"):
            break  # the last MetaImage header line
    return fields, position


def _check_declared_size(path: Path, declared: DeclaredData) -> None:
    shape_text = "x".join(str(s) for s in declared.shape)
    what = (
        f"its header declares {shape_text} voxels of {declared.dtype.name} ({format_bytes(declared.nbytes)})"
    )
    if not declared.data_file.is_file():
        raise ImageReadError(f"{path}: {what} in {declared.data_file}, which does not exist")
    stored = declared.data_file.stat().st_size
    if declared.compression is None and stored - declared.offset < declared.nbytes:
        raise ImageReadError(
            f"{path} is truncated: {what} but the file holds only "
            f"{format_bytes(max(stored - declared.offset, 0))} of voxel data"
        )
    if declared.compression in ("gzip", "deflate") and declared.nbytes > MAX_DEFLATE_RATIO * stored:
        raise ImageReadError(
            f"{path} has an impossible header: {what} but {format_bytes(stored)} of compressed data "
            f"can hold at most {format_bytes(MAX_DEFLATE_RATIO * stored)}"
        )
    available = int(psutil.virtual_memory().available)
    if declared.nbytes > available:
        raise ImageReadError(f"{path}: {what}, more than the {format_bytes(available)} of memory available")


def _scan_gzip(path: Path, declared: DeclaredData) -> None:
    """Stream the gzip file once: it must end cleanly and hold the declared data."""

    def chunks():
        try:
            with gzip.open(path, "rb") as handle:
                yield from iter(lambda: handle.read(_CHUNK), b"")
        except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as err:
            raise ImageReadError(
                f"{path} is truncated or corrupt: its gzip stream does not end cleanly ({err})"
            ) from None

    _scan_stream(path, declared, chunks(), skip=declared.offset)


def _scan_stream(path: Path, declared: DeclaredData, chunks, skip: int = 0) -> None:
    """Count the voxel bytes of ``chunks`` (after ``skip`` header bytes); look for NaN / Inf in floats."""
    check = declared.dtype.kind in "fc"
    itemsize = declared.dtype.itemsize
    needed = declared.nbytes
    seen = bad = 0
    carry = b""
    for chunk in chunks:
        if skip:
            cut = min(skip, len(chunk))
            chunk, skip = chunk[cut:], skip - cut
        if seen >= needed:
            continue  # trailing bytes (extensions) are allowed; keep reading to check the stream end
        chunk = chunk[: needed - seen]
        seen += len(chunk)
        if check:
            data = carry + chunk
            usable = len(data) - len(data) % itemsize
            values = np.frombuffer(data[:usable], dtype=declared.dtype)
            carry = data[usable:]
            bad += int(values.size - np.count_nonzero(np.isfinite(values)))
    if seen < needed:
        raise ImageReadError(
            f"{path} is truncated: its header declares {format_bytes(needed)} of voxel data, "
            f"the file holds {format_bytes(seen)}"
        )
    if bad:
        raise ImageReadError(f"{path} contains {bad} NaN or infinite voxel values (as stored in the file)")


def _magic(path: Path) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(2)
