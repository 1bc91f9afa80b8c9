"""Selective scan: pure-PyTorch backend against a float64 step-by-step reference, gradients, backends."""

from __future__ import annotations

import pytest
import torch
from mambamim.ops import ENV_VAR, backend_report, selective_scan_fn, selective_scan_torch
from mambamim.ops.backends import requested_backend, resolve_backend
from scan_reference import assert_matches_reference, make_inputs, reference_scan

CASES = [
    # b, d, L, n, groups_B, groups_C, use_z, use_D, use_bias, softplus, chunk
    (1, 4, 1, 1, 0, 0, False, False, False, False, None),
    (1, 3, 1, 16, 0, 0, True, True, True, True, 4),
    (3, 5, 23, 16, 0, 0, True, True, True, True, 4),
    (3, 6, 17, 1, 3, 3, False, True, False, False, 5),
    (1, 8, 40, 16, 4, 4, True, False, True, False, 7),
    (2, 4, 33, 4, 0, 1, False, False, True, True, None),
    (3, 6, 9, 16, 6, 6, True, True, False, False, 1),
    (2, 4, 70, 2, 1, 0, False, True, True, True, 64),
]


@pytest.mark.parametrize("b, d, L, n, groups_B, groups_C, use_z, use_D, use_bias, softplus, chunk", CASES)
def test_forward_and_every_gradient_match_reference(
    b, d, L, n, groups_B, groups_C, use_z, use_D, use_bias, softplus, chunk
):
    case = (b, d, L, n, groups_B, groups_C, use_z, use_D, use_bias, softplus, chunk)
    assert_matches_reference(selective_scan_torch, case)


def test_public_function_defaults_to_torch_on_cpu():
    inputs = make_inputs(2, 4, 12, 3, requires_grad=False)
    args = [inputs[k] for k in ("u", "delta", "A", "B", "C")]
    out = selective_scan_fn(*args, D=inputs["D"], z=inputs["z"], delta_softplus=True)
    torch.testing.assert_close(
        out, reference_scan(*args, D=inputs["D"], z=inputs["z"], delta_softplus=True)[0]
    )


def test_gradcheck_tiny_float64():
    inputs = make_inputs(2, 2, 5, 3, groups_B=2, groups_C=2, delta_max=2.0)
    names = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")

    def fn(*tensors):
        kwargs = dict(zip(names, tensors))
        out, last = selective_scan_torch(**kwargs, delta_softplus=True, return_last_state=True, chunk_size=2)
        return out, last

    assert torch.autograd.gradcheck(fn, tuple(inputs[k] for k in names))


def test_float32_large_steps_stay_finite_and_accurate():
    """delta up to 10 with |A| up to 16 drives decays to exp(-160): exact, no NaN/inf (no cumsum ratios)."""
    inputs = make_inputs(2, 8, 300, 16, delta_max=10.0, dtype=torch.float32)
    args = [inputs[k] for k in ("u", "delta", "A", "B", "C")]
    out = selective_scan_torch(*args, D=inputs["D"], z=inputs["z"])
    out.square().sum().backward()
    assert torch.isfinite(out).all()
    assert all(torch.isfinite(inputs[k].grad).all() for k in ("u", "delta", "A", "B", "C"))
    ref = reference_scan(*args, D=inputs["D"], z=inputs["z"])[0]
    torch.testing.assert_close(out.double(), ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_output_dtype_follows_u(dtype):
    inputs = make_inputs(1, 4, 6, 2, dtype=dtype, requires_grad=False)
    out, last = selective_scan_fn(*(inputs[k] for k in ("u", "delta", "A", "B", "C")), return_last_state=True)
    assert out.dtype == dtype and last.dtype == torch.float32


def test_autograd_saves_only_chunk_boundary_states():
    """Lean memory: what autograd keeps is O(b·d·L + b·d·n·L/T), never the (b, d, L, n) history."""
    b, d, L, n = 1, 16, 512, 16
    inputs = make_inputs(b, d, L, n, dtype=torch.float32)
    saved_bytes = []

    def pack(t):
        saved_bytes.append(t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = selective_scan_torch(*(inputs[k] for k in ("u", "delta", "A", "B", "C")), chunk_size=64)
    out.sum().backward()
    full_history = b * d * L * n * 4
    assert sum(saved_bytes) < full_history / 2


def test_backends_forced_and_errors(monkeypatch):
    inputs = make_inputs(1, 2, 3, 2, requires_grad=False)
    args = [inputs[k] for k in ("u", "delta", "A", "B", "C")]
    out = selective_scan_fn(*args, backend="torch")
    torch.testing.assert_close(out, reference_scan(*args)[0])
    # CPU tensors can never run the CUDA kernel: forcing it is an error, not a silent fallback
    with pytest.raises(RuntimeError, match="'cuda' was requested"):
        selective_scan_fn(*args, backend="cuda")
    monkeypatch.setenv(ENV_VAR, "cuda")
    with pytest.raises(RuntimeError, match="'cuda' was requested"):
        selective_scan_fn(*args)
    assert selective_scan_fn(*args, backend="auto").shape == (1, 2, 3)  # argument beats the variable
    monkeypatch.setenv(ENV_VAR, "cudnn")
    with pytest.raises(ValueError, match=f"{ENV_VAR} is 'cudnn'"):
        selective_scan_fn(*args)
    with pytest.raises(ValueError, match="backend argument is 'fast'"):
        selective_scan_fn(*args, backend="fast")
    monkeypatch.setenv(ENV_VAR, " Torch ")
    assert requested_backend() == "torch"


def test_resolve_backend_auto_and_unavailable_kernel(monkeypatch):
    from mambamim.ops import backends

    monkeypatch.delenv(ENV_VAR, raising=False)
    assert resolve_backend("selective_scan", on_cuda=False) == "torch"
    monkeypatch.setattr(backends, "cuda_kernel", lambda op: (None, "mamba-ssm not usable (test)"))
    monkeypatch.setattr(backends, "triton_scan", lambda: (None, "triton not usable (test)"))
    assert resolve_backend("selective_scan", on_cuda=True) == "torch"
    with pytest.raises(RuntimeError, match=r"unavailable: mamba-ssm not usable \(test\)"):
        resolve_backend("selective_scan", on_cuda=True, backend="cuda")
    monkeypatch.setattr(backends, "cuda_kernel", lambda op: (print, "kernel importable"))
    assert resolve_backend("selective_scan", on_cuda=True) == "cuda"
    assert resolve_backend("selective_scan", on_cuda=True, backend="torch") == "torch"


def test_backend_report_explains_choice(monkeypatch):
    monkeypatch.setenv(ENV_VAR, "torch")
    report = backend_report()
    assert report["requested"] == "torch"
    assert report["selective_scan"]["on_cpu"] == "torch" and "forced" in report["selective_scan"]["reason"]
    monkeypatch.delenv(ENV_VAR)
    report = backend_report()
    assert report["requested"] == "auto" and report["selective_scan"]["on_cpu"] == "torch"
    assert report["causal_conv1d"]["reason"].startswith("auto")
    monkeypatch.setenv(ENV_VAR, "nonsense")
    assert backend_report()["selective_scan"]["active"].startswith("error")


@pytest.mark.parametrize(
    "change, message",
    [
        ({"u": torch.randn(2, 4)}, "u must be"),
        ({"u": torch.randn(2, 4, 0)}, "at least one time step"),
        ({"delta": torch.rand(2, 4, 5)}, "delta must have"),
        ({"A": -torch.rand(3, 2)}, "A must be"),
        ({"B": torch.randn(2, 3, 6)}, "B must have shape"),
        ({"C": torch.randn(2, 3, 2, 6)}, "C has 3 groups"),
        ({"C": torch.randn(2, 2, 2, 6)}, "same number of groups"),
        ({"D": torch.randn(5)}, "D must have shape"),
        ({"z": torch.randn(2, 4, 7)}, "z must have"),
    ],
)
def test_bad_shapes_name_the_argument(change, message):
    inputs = make_inputs(2, 4, 6, 2, requires_grad=False)
    inputs.update(change)
    with pytest.raises(ValueError, match=message):
        selective_scan_fn(**inputs)


@pytest.mark.cuda
def test_cuda_matches_mamba_ssm_kernel():
    pytest.importorskip("mamba_ssm")
    inputs = make_inputs(2, 64, 300, 16, groups_B=0, groups_C=0, dtype=torch.float32)
    inputs = {k: v.detach().cuda().requires_grad_() for k, v in inputs.items()}
    inputs["delta"] = (inputs["delta"] * 0.1).detach().requires_grad_()
    results = {}
    for backend in ("cuda", "torch"):
        out, last = selective_scan_fn(**inputs, delta_softplus=True, return_last_state=True, backend=backend)
        grads = torch.autograd.grad(out.square().sum(), list(inputs.values()))
        results[backend] = (out, last, grads)
    for got, want in zip(results["torch"][:2], results["cuda"][:2]):
        torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-3)
    for got, want in zip(results["torch"][2], results["cuda"][2]):
        torch.testing.assert_close(got, want, rtol=1e-2, atol=1e-2)


def test_cuda_dispatch_passes_mamba_ssm_argument_order(monkeypatch):
    """Without a GPU, stand in a kernel with mamba-ssm's positional signature and check the plumbing."""
    from mambamim.ops import selective_scan as module

    calls = []

    def kernel(
        u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, return_last_state=False
    ):
        calls.append(delta_softplus)
        return selective_scan_torch(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)

    monkeypatch.setattr(module, "resolve_backend", lambda op, on_cuda, backend=None: "cuda")
    monkeypatch.setattr(module, "cuda_kernel", lambda op: (kernel, "stand-in"))
    inputs = make_inputs(2, 4, 9, 3, requires_grad=False)
    out, last = selective_scan_fn(**inputs, delta_softplus=True, return_last_state=True)
    ref_out, ref_last = reference_scan(
        *(inputs[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")), True
    )
    assert calls == [True]
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(last, ref_last)
