"""MambaMIM pre-training step throughput, and the masked (sparse) encoder's cost against the dense one.

Measures, for the default-size model (``MambaMIM()``: HyMamba encoder defaults, decoder 16-256 wide) on
random 96³ crops:

- one training step = forward + backward + AdamW update, reported as crops/s (CPU batch 1; on CUDA
  batch 8 with bf16 autocast, as ``mambamim pretrain`` runs);
- encoder only, forward + backward of the sum of its outputs: the masked encoder (bottom-up masking,
  visible Mamba tokens only, TOKI) against the dense ``HyMambaEncoder`` on the same crop.

The masked encoder runs the CNN stages as dense convolutions whose inputs and outputs are multiplied by
the mask (no sparse-convolution kernels), so it saves work only in the Mamba stage, which sees 25 % of
the tokens at mask ratio 0.75. Times are medians of ``--repeats`` runs after one warm-up run.

    python Testing/benchmarks/bench_pretrain_step.py --out pretrain_step.json
    python Testing/benchmarks/bench_pretrain_step.py --quick
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def median_time(fn, repeats: int, sync) -> float:
    fn()  # warm-up (allocator, kernel selection, cached scan orders)
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def bench_device(device: str, crop: int, batch: int, repeats: int, config: dict) -> list[dict]:
    import torch
    from mambamim.mim.masking import random_token_mask
    from mambamim.mim.model import MambaMIM
    from mambamim.mim.sparse import cnn_features, visible_mamba_sequence

    dev = torch.device(device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    amp = dev.type == "cuda"
    torch.manual_seed(0)
    model = MambaMIM(**config).to(dev)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.rand(batch, 1, crop, crop, crop, device=dev)
    generator = torch.Generator().manual_seed(0)

    def autocast():
        return torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp)

    def train_step() -> None:
        with autocast():
            loss = model(x, generator=generator).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    grid = (crop // model.size_multiple,) * 3
    mask = random_token_mask(batch, grid, model.mask_ratio, generator).to(dev)
    masks = model.level_masks(mask, (crop,) * 3)

    def masked_encoder() -> None:
        with autocast():
            features = cnn_features(model.encoder, x, masks)
            sequence, masked_seq, _ = visible_mamba_sequence(model.encoder.mamba, features[-1], mask)
            sequence = model.fill_masked_tokens(sequence, masked_seq)
            total = sum(f.float().sum() for f in features[:-1]) + sequence.float().sum()
        total.backward()

    def dense_encoder() -> None:
        with autocast():
            total = sum(f.float().sum() for f in model.encoder(x))
        total.backward()

    common = {
        "device": str(dev),
        "crop": crop,
        "batch": batch,
        "autocast": "bf16" if amp else "off",
        "threads": torch.get_num_threads(),
    }
    step = median_time(train_step, repeats, sync)
    masked = median_time(masked_encoder, repeats, sync)
    dense = median_time(dense_encoder, repeats, sync)
    params = sum(p.numel() for p in model.parameters())
    encoder_params = sum(p.numel() for p in model.encoder.parameters())
    return [
        {**common, "what": "train step (fwd+bwd+AdamW)", "time_s": step, "crops_per_s": batch / step,
         "params_m": params / 1e6},
        {**common, "what": "masked encoder fwd+bwd", "time_s": masked, "crops_per_s": batch / masked,
         "params_m": encoder_params / 1e6},
        {**common, "what": "dense encoder fwd+bwd", "time_s": dense, "crops_per_s": batch / dense,
         "params_m": encoder_params / 1e6},
    ]  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--quick", action="store_true", help="32³ crops, tiny model, one repeat: a smoke run")
    parser.add_argument("--crop", type=int, default=96, help="crop edge in voxels (multiple of 16)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per case (median reported)")
    parser.add_argument("--cuda-batch", type=int, default=8, help="batch on CUDA (CPU always uses 1)")
    args = parser.parse_args()

    import torch

    config: dict = {}
    crop, repeats = args.crop, args.repeats
    if args.quick:
        crop, repeats = 32, 1
        config = {
            "encoder_config": {"channels": [8, 16, 16, 24, 32], "blocks": [1, 1, 1, 1, 1],
                               "expansion": [2, 2, 2, 2, 2], "mamba_depth": 1, "d_state": 4},
            "decoder_channels": [8, 8, 16, 16, 32],
        }  # fmt: skip
    results = bench_device("cpu", crop, 1, repeats, config)
    if torch.cuda.is_available():
        results += bench_device("cuda", crop, args.cuda_batch, repeats, config)

    size = "quick tiny model" if args.quick else "default model"
    print(f"MambaMIM pre-training step, {size}, {crop}^3 crops, torch {torch.__version__}")
    header = f"{'device':<7} {'batch':>5} {'what':<28} {'time s':>9} {'crops/s':>9}"
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r['device']:<7} {r['batch']:>5} {r['what']:<28} {r['time_s']:>9.3f} {r['crops_per_s']:>9.3f}"
        )
    for device in sorted({r["device"] for r in results}):
        pick = {r["what"]: r["time_s"] for r in results if r["device"] == device}
        ratio = pick["masked encoder fwd+bwd"] / pick["dense encoder fwd+bwd"]
        print(f"{device}: masked / dense encoder time = {ratio:.2f}")
    if args.out:
        payload = {"benchmark": "pretrain_step", "torch": torch.__version__, "quick": args.quick}
        payload["results"] = results
        tmp = args.out.with_suffix(args.out.suffix + ".tmp")
        tmp.write_text(json.dumps(payload, indent=2))
        tmp.replace(args.out)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
