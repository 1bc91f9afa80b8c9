"""Bad data never passes silently and nothing is left behind.

Every case starts from a real scan in ../shared/data, transformed in pytest's temporary folder, and
runs the `mambamim segment` command. Each refusal asserts: exit status 1, one error line on stderr
naming the file and the problem, no output and no temporary file (in the output folder or in the
temporary folder, which the test points at an empty folder of its own).
"""

from __future__ import annotations

import gzip
import json
import os
import resource
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from infer_helpers import make_threshold_package, register_threshold_model, run_segment
from mambamim.data.imageio import read_image, write_image
from mambamim.infer import package as package_module
from mambamim.infer import segment as segment_module
from mambamim.infer.batch import find_cases
from mambamim.infer.card import CARD_FILE
from mambamim.infer.package import WEIGHTS_FILE, write_zip

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "Resources" / "models" / "btcv-hymamba-demo"


@pytest.fixture
def tmpdir_for_staging(tmp_path, monkeypatch):
    """The process's temporary folder, empty, so a leftover staging file would show."""
    staging = tmp_path / "system-tmp"
    staging.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(staging))
    return staging


@pytest.fixture
def pkg(tmp_path, monkeypatch, tmpdir_for_staging):
    register_threshold_model(monkeypatch)
    return make_threshold_package(tmp_path / "pkg", spacing=(6.0, 6.0, 6.0))


@pytest.fixture
def out_dir(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    return folder


def segment_args(pkg: Path, source: Path, out_dir: Path, *extra: str) -> list[str]:
    """``mambamim segment``'s arguments for ``source`` into ``out_dir``, quietly, on the CPU."""
    output = str(out_dir / "labels.nii.gz")
    return ["--model", str(pkg), "--input", str(source), "--output", output, "--progress", "none",
            "--device", "cpu", *extra]  # fmt: skip


def segment(pkg: Path, source: Path, out_dir: Path, *extra: str) -> int:
    return run_segment(segment_args(pkg, source, out_dir, *extra))


def assert_refused(code: int, capsys, out_dir: Path, staging: Path, *words: str) -> str:
    """Exit 1, one error line holding every word, nothing in the output or temporary folder."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert list(out_dir.iterdir()) == [], "the output folder must stay empty"
    assert list(staging.iterdir()) == [], "no temporary file may remain"
    return lines[0]


def nifti_copy(source: Path, target: Path, array: np.ndarray | None = None) -> Path:
    """``source`` saved by nibabel (optionally with other voxel values) at ``target``."""
    image = nib.load(str(source))
    data = np.asarray(image.dataobj) if array is None else array
    header = image.header.copy()
    header.set_data_dtype(data.dtype)
    nib.save(nib.Nifti1Image(data, image.affine, header), str(target))
    return target


# 1. NaN or Inf voxels, detected in what the file holds, for every format
def with_non_finite(sample_ct: Path, count: int) -> np.ndarray:
    data = np.asarray(nib.load(str(sample_ct)).dataobj).astype(np.float32)
    where = np.unravel_index(np.linspace(0, data.size - 1, count).astype(int), data.shape)
    data[where] = [(np.nan, np.inf, -np.inf)[i % 3] for i in range(count)]
    return data


@pytest.mark.parametrize("name", ["nan.nii.gz", "nan.nii", "nan.nrrd", "nan.mha", "nan.mgz"])
def test_non_finite_voxels_refused_in_every_format(
    name, sample_ct, pkg, out_dir, tmpdir_for_staging, tmp_path, capsys
):
    data = with_non_finite(sample_ct, 70)
    target = tmp_path / name
    if name.endswith(".mgz"):
        nib.save(nib.MGHImage(data, nib.load(str(sample_ct)).affine), str(target))
    elif name.endswith((".nrrd", ".mha")):
        image = sitk.GetImageFromArray(data.transpose(2, 1, 0))
        image.CopyInformation(read_image(sample_ct))
        sitk.WriteImage(image, str(target), useCompression=True)
    else:
        nifti_copy(sample_ct, target, data)
    code = segment(pkg, target, out_dir)
    assert_refused(code, capsys, out_dir, tmpdir_for_staging, str(target), "NaN or infinite")


def test_all_nan_volume_is_reported_as_nan_not_constant(
    sample_ct, pkg, out_dir, tmpdir_for_staging, tmp_path, capsys
):
    shape = nib.load(str(sample_ct)).shape
    target = nifti_copy(sample_ct, tmp_path / "all_nan.nii.gz", np.full(shape, np.nan, np.float32))
    line = assert_refused(segment(pkg, target, out_dir), capsys, out_dir, tmpdir_for_staging, str(target))
    assert f"{np.prod(shape)} NaN or infinite" in line and "constant" not in line


# 2. Truncated files: data length and gzip stream end
def test_truncated_gzip_nifti_is_refused(sample_ct, pkg, out_dir, tmpdir_for_staging, tmp_path, capsys):
    raw = sample_ct.read_bytes()
    target = tmp_path / "half.nii.gz"
    target.write_bytes(raw[: len(raw) // 2])
    code = segment(pkg, target, out_dir)
    assert_refused(code, capsys, out_dir, tmpdir_for_staging, str(target), "truncated", "gzip")


def test_gzip_nifti_missing_only_its_end_marker_is_refused(
    sample_ct, pkg, out_dir, tmpdir_for_staging, tmp_path, capsys
):
    """All voxels present, but the stream lacks its CRC/length trailer: still not a complete file."""
    raw = sample_ct.read_bytes()
    target = tmp_path / "no_trailer.nii.gz"
    target.write_bytes(raw[:-8])
    code = segment(pkg, target, out_dir)
    assert_refused(code, capsys, out_dir, tmpdir_for_staging, str(target), "does not end cleanly")


@pytest.mark.parametrize("name", ["short.nii", "short.nrrd"])
def test_truncated_uncompressed_file_is_refused(
    name, sample_ct, pkg, out_dir, tmpdir_for_staging, tmp_path, capsys
):
    full = tmp_path / ("full" + name[5:])
    if name.endswith(".nii"):
        full.write_bytes(gzip.decompress(sample_ct.read_bytes()))
    else:
        sitk.WriteImage(read_image(sample_ct), str(full), useCompression=False)
    target = tmp_path / name
    target.write_bytes(full.read_bytes()[: full.stat().st_size - 1000])
    code = segment(pkg, target, out_dir)
    assert_refused(code, capsys, out_dir, tmpdir_for_staging, str(target), "truncated")


# 3. A header declaring far more data than the file can hold, under a memory limit
HEADROOM = 2**30  # what reading may add to the address space the imports need; the header declares 32 GiB


def address_space_after_imports() -> int:
    """Peak virtual memory (bytes) of a Python that has imported what `mambamim segment` imports."""
    probe = (
        "import torch, SimpleITK, nibabel, mambamim.cli, mambamim.infer.segment\n"
        "print([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmPeak')][0])"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return int(result.stdout.strip()) * 1024


def impossible_header(sample_ct: Path, target: Path) -> Path:
    """The sample's own NIfTI header claiming 2048^3 int32 voxels, cut to 600 bytes."""
    raw = bytearray(gzip.decompress(sample_ct.read_bytes())[:600])
    struct.pack_into("<8h", raw, 40, 3, 2048, 2048, 2048, 1, 1, 1, 1)
    target.write_bytes(gzip.compress(bytes(raw)) if target.name.endswith(".gz") else bytes(raw))
    return target


@pytest.mark.parametrize(
    ("name", "problem"), [("huge.nii", "truncated"), ("huge.nii.gz", "impossible header")]
)
def test_impossible_header_refused_without_allocating(name, problem, sample_ct, tmp_path):
    target = impossible_header(sample_ct, tmp_path / name)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    staging = tmp_path / "system-tmp"
    staging.mkdir()

    limit = address_space_after_imports() + HEADROOM

    def limit_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mambamim",
            "segment",
            *segment_args(DEMO, target, out_dir),
        ],
        capture_output=True,
        text=True,
        preexec_fn=limit_memory,
        timeout=300,
        env={**os.environ, "TMPDIR": str(staging), "OMP_NUM_THREADS": "1"},
    )
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1, result.stderr
    assert len(lines) == 1 and str(target) in lines[0] and problem in lines[0], result.stderr
    assert "2048x2048x2048" in lines[0] and "MemoryError" not in result.stderr
    assert list(out_dir.iterdir()) == [] and list(staging.iterdir()) == []


# 4. Label maps, another modality, too-small volumes: refused by default, each with an override
def test_label_map_given_as_scan(data_dir, pkg, out_dir, tmpdir_for_staging, tmp_path, capsys):
    labels = shutil.copy(data_dir / "ct_abdomen" / "ct_labels_btcv13.nii.gz", tmp_path / "scan.nii.gz")
    line = assert_refused(
        segment(pkg, Path(labels), out_dir),
        capsys,
        out_dir,
        tmpdir_for_staging,
        str(labels),
        "looks like a label map",
        "13 distinct integer values",
        "--allow-label-map",
    )
    assert "neighbouring voxels differ" in line
    # The override: the label map is then taken for a scan (it also has no air, so --modality says CT).
    assert segment(pkg, Path(labels), out_dir, "--allow-label-map", "--modality", "CT") == 0
    assert (out_dir / "labels.nii.gz").is_file()


def test_mr_scan_refused_by_a_ct_model(data_dir, pkg, out_dir, tmpdir_for_staging, tmp_path, capsys):
    mr = Path(shutil.copy(data_dir / "ct_abdomen" / "mr.nii.gz", tmp_path / "mr.nii.gz"))
    line = assert_refused(
        segment(pkg, mr, out_dir),
        capsys,
        out_dir,
        tmpdir_for_staging,
        str(mr),
        "looks like MR",
        "for CT images",
        "--modality CT",
    )
    assert "no DICOM Modality tag" in line
    assert segment(pkg, mr, out_dir, "--allow-other-modality") == 0


def test_dicom_modality_tag_decides(data_dir, tmp_path, monkeypatch, out_dir, tmpdir_for_staging, capsys):
    register_threshold_model(monkeypatch)
    mr_model = make_threshold_package(tmp_path / "mr_pkg", spacing=(6.0, 6.0, 6.0), modality="MR")
    series = data_dir / "ct_abdomen" / "dicom"
    assert_refused(
        segment(mr_model, series, out_dir),
        capsys,
        out_dir,
        tmpdir_for_staging,
        str(series),
        "looks like CT",
        "DICOM Modality tag is CT",
    )


def test_tiny_volume_refused(sample_ct, pkg, out_dir, tmpdir_for_staging, tmp_path, capsys):
    crop = write_image(read_image(sample_ct)[60:64, 50:54, 56:60], tmp_path / "crop4.nii.gz")
    assert_refused(
        segment(pkg, crop, out_dir),
        capsys,
        out_dir,
        tmpdir_for_staging,
        str(crop),
        "too small",
        "12 x 12 x 12 mm",
        "--allow-small",
    )
    assert segment(pkg, crop, out_dir, "--allow-small", "--modality", "CT") == 0


def test_real_scans_pass_the_input_checks(data_dir):
    """No false alarms on the shared scans: CT and MR are told apart and none looks like labels."""
    from mambamim.infer.input_checks import image_modality, label_map_evidence

    expected = {
        "ct_abdomen/ct.nii.gz": "CT",
        "ct_abdomen/mr.nii.gz": "MR",
        "ct_abdomen/dicom": "CT",
        "brain_t1/t1.nii.gz": "MR",
        "brain_mgz/norm.mgz": "MR",
    }
    for name, modality in expected.items():
        image = read_image(data_dir / name)
        assert image_modality(image)[0] == modality, name
        assert label_map_evidence(sitk.GetArrayViewFromImage(image)) is None, name
    for name in (
        "ct_abdomen/ct_labels_total.nii.gz",
        "brain_t1/t1_labels_aseg.nii.gz",
        "brain_mgz/aparc_aseg.mgz",
        "ct_abdomen/dicom_labels_total.nii.gz",
    ):
        image = read_image(data_dir / name, allow_constant=True)  # kept: the view borrows its memory
        assert label_map_evidence(sitk.GetArrayViewFromImage(image)) is not None, name


# 5. Model cards pointing outside their package; zip members; zip size bound
@pytest.mark.parametrize(
    "weights", ["../x.safetensors", "/etc/passwd", "/dev/zero", "sub/weights.safetensors"]
)
def test_card_weights_outside_the_package_refused(
    weights, sample_ct, pkg, out_dir, tmpdir_for_staging, capsys
):
    card = json.loads((pkg / CARD_FILE).read_text())
    card["weights"]["file"] = weights
    (pkg / CARD_FILE).write_text(json.dumps(card))
    assert_refused(
        segment(pkg, sample_ct, out_dir),
        capsys,
        out_dir,
        tmpdir_for_staging,
        str(pkg),
        repr(weights),
        "not a plain file name",
    )


def test_weights_file_that_is_a_device_is_refused_before_reading(
    sample_ct, pkg, out_dir, tmpdir_for_staging, capsys
):
    (pkg / WEIGHTS_FILE).unlink()
    (pkg / WEIGHTS_FILE).symlink_to("/dev/zero")
    started = time.monotonic()
    assert_refused(
        segment(pkg, sample_ct, out_dir),
        capsys,
        out_dir,
        tmpdir_for_staging,
        str(pkg),
        WEIGHTS_FILE,
        "not a regular file",
    )
    assert time.monotonic() - started < 60  # reading /dev/zero would never end


def test_zip_with_escaping_member_or_too_large_refused(
    sample_ct, pkg, out_dir, tmpdir_for_staging, tmp_path, capsys, monkeypatch
):
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as archive:
        archive.write(pkg / CARD_FILE, CARD_FILE)
        archive.write(pkg / WEIGHTS_FILE, WEIGHTS_FILE)
        archive.writestr("../escape.txt", "x")
    assert_refused(
        segment(evil, sample_ct, out_dir),
        capsys,
        out_dir,
        tmpdir_for_staging,
        str(evil),
        "'../escape.txt'",
        "unsafe",
    )

    bomb = write_zip(pkg, tmp_path / "bomb.zip")
    with zipfile.ZipFile(bomb, "a", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("padding.bin", bytes(4 * 2**20))  # 4 MiB of zeros deflate to ~4 KiB
    monkeypatch.setattr(package_module, "MAX_PACKAGE_BYTES", 2**20)
    assert_refused(
        segment(bomb, sample_ct, out_dir), capsys, out_dir, tmpdir_for_staging, str(bomb), "decompresses to"
    )


# 6. SIGKILL while the output is written leaves nothing beside the user's files
KILL_WHILE_WRITING = """
import os, sys, time
sys.path.insert(0, {testing!r})
import SimpleITK as sitk
from infer_helpers import register_threshold_model
class Patch:
    def setattr(self, owner, name, value):
        setattr(owner, name, value)
register_threshold_model(Patch())
original = sitk.WriteImage
def write_then_hang(image, path, *args, **kwargs):
    original(image, path, *args, **kwargs)
    open({marker!r}, "w").write(str(path))
    time.sleep(600)
sitk.WriteImage = write_then_hang
from mambamim.cli import main
main({argv!r})
"""


def test_sigkill_during_write_leaves_nothing_beside_the_output(sample_ct, pkg, out_dir, tmp_path, caplog):
    staging = tmp_path / "killed-tmp"
    staging.mkdir()
    marker = tmp_path / "written"
    argv = ["segment", *segment_args(pkg, sample_ct, out_dir)]
    script = KILL_WHILE_WRITING.format(testing=str(ROOT / "Testing"), marker=str(marker), argv=argv)
    process = subprocess.Popen(
        [sys.executable, "-c", script],
        env={**os.environ, "TMPDIR": str(staging)},
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 300
    while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert marker.exists(), process.stderr.read() if process.poll() is not None else "timed out"
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    process.stderr.close()
    # The file being written was in the temporary folder; the user's folder holds nothing.
    assert Path(marker.read_text()).is_relative_to(staging)
    assert list(out_dir.iterdir()) == []
    leftovers = list(staging.iterdir())
    assert len(leftovers) == 1 and leftovers[0].name.startswith(f"mambamim-partial-{process.pid}-")
    # The next run sweeps the dead process's staging folder and says so.
    tempfile.tempdir = str(staging)
    try:
        assert segment(pkg, sample_ct, out_dir) == 0
    finally:
        tempfile.tempdir = None
    assert list(staging.iterdir()) == []
    assert any("partial output left by an interrupted mambamim run" in r.getMessage() for r in caplog.records)
    assert sorted(p.name for p in out_dir.iterdir()) == ["labels.nii.gz", "labels.seg.nrrd"]


def test_hidden_partial_copies_are_never_taken_for_inputs(sample_ct, tmp_path):
    folder = tmp_path / "cases"
    folder.mkdir()
    shutil.copy(sample_ct, folder / "ct.nii.gz")
    shutil.copy(sample_ct, folder / ".ct_seg.nii.gz.mambamim-partial-12345-abcd")
    assert [case.name for case in find_cases(folder, tmp_path / "out")] == ["ct"]


# 7. An output folder that cannot be written is found before inference, naming the output
@pytest.fixture
def read_only_folder(tmp_path):
    folder = tmp_path / "read-only"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    # root ignores permission bits; an immutable folder refuses even root.
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(folder)]).returncode != 0:
        pytest.skip("running as root without chattr +i: cannot make a read-only folder")
    yield folder
    subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_unwritable_output_refused_before_inference(
    sample_ct, pkg, read_only_folder, tmpdir_for_staging, monkeypatch, capsys
):
    def no_inference(*args, **kwargs):
        raise AssertionError("inference started although the output cannot be written")

    monkeypatch.setattr(segment_module, "sliding_window_logits", no_inference)
    output = read_only_folder / "labels.nii.gz"
    assert_refused(
        segment(pkg, sample_ct, read_only_folder),
        capsys,
        read_only_folder,
        tmpdir_for_staging,
        f"cannot write output {output}",
        "not writable",
    )
    assert "tmp" not in capsys.readouterr().err


def test_detached_big_endian_nrrd_is_read_as_declared(sample_ct, tmp_path):
    """Byte order and detached data files come from the header: no false alarm, NaN still found."""
    image = sitk.Cast(read_image(sample_ct), sitk.sitkFloat32)
    header = tmp_path / "scan.nhdr"
    sitk.WriteImage(image, str(header), useCompression=False)
    data = sitk.GetArrayFromImage(image)
    (tmp_path / "scan.raw").write_bytes(data.astype(">f4").tobytes())
    header.write_text(header.read_text().replace("endian: little", "endian: big"))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(read_image(header)), data)
    data.reshape(-1)[1000] = np.nan
    (tmp_path / "scan.raw").write_bytes(data.astype(">f4").tobytes())
    with pytest.raises(ValueError, match=r"scan.nhdr contains 1 NaN or infinite"):
        read_image(header)


def test_training_output_folder_checked_before_training(read_only_folder):
    from mambamim.engine.setup import prepare_output_dir

    run = read_only_folder / "runs" / "mim"
    with pytest.raises(PermissionError, match=f"cannot write output {run / 'last.pt'}"):
        prepare_output_dir(run, resuming=False, overwrite=False)
    assert list(read_only_folder.iterdir()) == []
