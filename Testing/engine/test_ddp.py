"""Real DistributedDataParallel on CPU: 2 gloo processes pre-train 2 steps and end with equal weights."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, data: str, out: str) -> None:
    import os

    os.environ.update(
        RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size),
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
    )  # fmt: skip
    torch.set_num_threads(1)
    from mambamim.engine.pretrain import make_config, run_pretrain

    config = make_config("tiny", data=data, epochs=2, num_samples=1, batch=1, spacing=[3.0, 3.0, 3.0])
    result = run_pretrain(config, Path(out) / "run", device="cpu", show_bar=False)
    parameters = {name: p.detach().clone() for name, p in result.model.named_parameters()}
    torch.save(parameters, Path(out) / f"rank{rank}.pt")


@pytest.mark.slow
def test_two_gloo_processes_keep_identical_parameters(tmp_path, sample_ct):
    # Two "scans" (the same file twice) so each rank gets its own volume per step.
    data = tmp_path / "dataset.json"
    data.write_text(f'{{"training": [{{"image": "{sample_ct}"}}, {{"image": "{sample_ct}"}}]}}')
    mp.start_processes(
        _worker, args=(2, _free_port(), str(data), str(tmp_path)), nprocs=2, join=True, start_method="spawn"
    )
    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    # Parameters, not buffers: BatchNorm running statistics are per rank between DDP's buffer broadcasts.
    assert rank0.keys() == rank1.keys()
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), f"{key} differs between ranks"
    # The run really trained (2 steps) and rank 0 alone wrote the checkpoint.
    from mambamim.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(tmp_path / "run" / "last.pt", expected_format="mambamim-pretrain")
    assert checkpoint["step"] == 2 and checkpoint["world_size"] == 2
    assert any(not torch.equal(checkpoint["model"][k], v) for k, v in _initial_weights().items())
    assert all(torch.equal(checkpoint["model"][k], v) for k, v in rank0.items())
    lines = (tmp_path / "run" / "train_log.csv").read_text().splitlines()
    assert len(lines) == 3  # header + 2 steps, written once (rank 0)


def _initial_weights() -> dict[str, torch.Tensor]:
    from mambamim.engine.pretrain import PRESETS
    from mambamim.engine.setup import seed_everything
    from mambamim.mim.model import MambaMIM

    seed_everything(0)
    return MambaMIM(**PRESETS["tiny"]["model"]).state_dict()


pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
