"""One error policy: user-facing errors (``mambamim.errors``) are one line, anything else is a bug with its
traceback, both at ``mambamim.cli.main`` and in the progress stream of ``segment``/``reconstruct``."""

from __future__ import annotations

import json

import pytest
from mambamim import cli
from mambamim.commands import convert as convert_command
from mambamim.errors import USER_ERRORS, InvalidInput, MambaMIMError
from mambamim.infer.progress import run_command


def test_a_user_error_is_one_line_naming_the_file(tmp_path, capsys):
    missing = tmp_path / "missing.pth"
    code = cli.main(["convert", "--from", "mambamim", str(missing), "-o", str(tmp_path / "out.safetensors")])
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert err.count("\n") == 0 and str(missing) in err and err.startswith("error: ")


def test_a_bad_file_is_one_line(tmp_path, capsys):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    assert cli.main(["convert", "--from", "mambamim", str(junk), "-o", str(tmp_path / "o.safetensors")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(junk) in err


def test_a_runtime_error_is_not_turned_into_a_user_error(monkeypatch):
    def broken(args):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(convert_command, "run", broken)
    with pytest.raises(RuntimeError, match="illegal memory access"):
        cli.main(["convert", "--from", "mambamim", "x.pth", "-o", "y.safetensors"])


def test_user_errors_share_one_base_and_keep_their_standard_base():
    from mambamim.checkpoint import CheckpointError
    from mambamim.data.dataset import NoReadableScansError
    from mambamim.data.file_integrity import ImageReadError
    from mambamim.data.labels import LabelError
    from mambamim.infer.card import PackageError
    from mambamim.infer.convert import ConversionError
    from mambamim.infer.input_checks import InputRefused
    from mambamim.infer.modality import ModalityMismatch

    for cls in (CheckpointError, ImageReadError, LabelError, ConversionError, InputRefused, ModalityMismatch,
                PackageError, InvalidInput):  # fmt: skip
        assert issubclass(cls, MambaMIMError) and issubclass(cls, ValueError), cls
    assert issubclass(NoReadableScansError, MambaMIMError)
    assert not issubclass(RuntimeError, USER_ERRORS) and not issubclass(ValueError, USER_ERRORS)


@pytest.mark.parametrize(
    ("error", "traceback_shown"),
    [(InvalidInput("volume.nii.gz is constant"), False), (RuntimeError("a bug in a kernel"), True)],
)
def test_progress_stream_ends_with_an_error_event_and_only_bugs_keep_a_traceback(
    error, traceback_shown, capsys
):
    def work(reporter, cancel):
        raise error

    assert run_command("json", work) == 1
    out, err = capsys.readouterr()
    last = json.loads(out.strip().splitlines()[-1])
    assert last["stage"] == "error" and str(error) in last["message"]
    assert ("Traceback" in err) is traceback_shown
