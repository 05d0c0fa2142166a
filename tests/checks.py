"""Checks several test modules run: a case's forward, gradients and transposed convolution against
torch, torch.compile and torch.export of a model, a gradient penalty; and a benchmark result row."""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from triton_conv.perf import harness
from triton_conv.perf.suite import SHAPES_BY_NUMBER, pass_bytes, pass_flops

from triton_conv.testing import TORCH_CONV_TRANSPOSE, TRITON_CONV, TRITON_CONV_TRANSPOSE, in_layout

from .reference import DEVICE, ConvCase, TCase, assert_close, make_inputs, make_transposed_inputs, reference_forward


def check_forward(case: ConvCase, dtype: torch.dtype, layout: str):
    """triton_conv's forward on ``case`` against torch's in float64; returns (x, w, y)."""
    x, w, b = make_inputs(case, dtype, layout)
    y = TRITON_CONV[case.ndim](x, w, b, **case.kwargs(), padding_mode=case.padding_mode)
    assert_close(y, reference_forward(case, x, w, b), dtype, case.reduction, f"forward {case.id}")
    return x, w, y


def _cotangent(shape, dtype, device, kind: str) -> torch.Tensor:
    if kind == "expanded":
        # What y.sum() sends back: one value broadcast with zero strides.
        return torch.randn((), dtype=dtype, device=device).expand(shape)
    g = torch.randn(shape, dtype=torch.float64).to(dtype).to(device)
    if kind == "transposed":
        # Spatial dims swapped in memory: neither contiguous nor channels-last.
        return g.transpose(-1, -2).contiguous().transpose(-1, -2) if g.dim() > 3 else g.flip(-1).contiguous().flip(-1)
    if kind == "channels_last":
        # What a channels-last model sends back (channels innermost in memory, NLC in 1-D).
        return in_layout(g, "channels_last")
    return g


def check_backward(case: ConvCase, dtype: torch.dtype, layout: str = "contiguous", cotangent: str = "random") -> None:
    """The input, weight and bias gradients on ``case`` against torch's in float64."""
    x, w, b = make_inputs(case, dtype, layout, requires_grad=True)
    leaves = [t for t in (x, w, b) if t is not None]
    y = TRITON_CONV[case.ndim](x, w, b, **case.kwargs(), padding_mode=case.padding_mode)
    g = _cotangent(y.shape, dtype, y.device, cotangent)
    ours = torch.autograd.grad(y, leaves, g)

    ref_leaves = [t.detach().double().requires_grad_() for t in leaves]
    rx, rw = ref_leaves[:2]
    rb = ref_leaves[2] if b is not None else None
    expected = torch.autograd.grad(reference_forward(case, rx, rw, rb), ref_leaves, g.double())

    # Reduction lengths: dx sums K/groups * taps terms, dw and db sum N * output pixels terms.
    pixels = y.numel() // (y.shape[0] * y.shape[1]) * y.shape[0]
    reductions = [case.out_channels // case.groups * w[0, 0].numel(), pixels, pixels]
    for name, got, want, red in zip(("input", "weight", "bias"), ours, expected, reductions):
        assert_close(got, want.to(dtype), dtype, red, f"grad {name} {case.id}")


def check_transposed(case: TCase, dtype: torch.dtype, layout: str = "contiguous", **epilogue) -> None:
    """Output and the gradients of input, weight, bias (and residual) against torch in float64."""
    x, w, b = make_transposed_inputs(case, dtype, layout)
    leaves = [t for t in (x, w, b) if t is not None]
    conv_transpose = TORCH_CONV_TRANSPOSE[case.ndim]
    reference = conv_transpose(*(t.double() if t is not None else None for t in (x, w, b)), **case.kwargs())
    residual = None
    if epilogue:
        residual = torch.randn(reference.shape, dtype=torch.float64).to(dtype).to(DEVICE).requires_grad_(True)
        leaves.append(residual)
        activation = {"relu": torch.relu, "gelu": F.gelu, "tanh": torch.tanh}[epilogue["activation"]]
        reference = activation(reference + residual.double())
    y = TRITON_CONV_TRANSPOSE[case.ndim](x, w, b, **case.kwargs(), residual=residual, **epilogue)
    # torch's rule: a channels-last output when the input or the weight is channels-last.
    if layout == "channels_last" and case.ndim > 1:
        expected_format = torch.channels_last if case.ndim == 2 else torch.channels_last_3d
        assert y.is_contiguous(memory_format=expected_format)
    dy = in_layout(torch.randn(reference.shape, dtype=torch.float64).to(dtype).to(DEVICE), layout)
    ours = torch.autograd.grad(y, leaves, dy)
    expected = torch.autograd.grad(reference, leaves, dy.double())
    names = ["output", "input", "weight", "bias", "residual"][: len(leaves) + 1]
    for what, got, want in zip(names, [y, *ours], [reference, *expected]):
        assert_close(got, want, dtype, case.reduction, f"{what} {case.id}")


def _loss_and_grads(model: torch.nn.Module, x: torch.Tensor):
    loss = model(x).square().sum()
    return loss, torch.autograd.grad(loss, [x, *model.parameters()])


def check_compile_matches_eager(model: torch.nn.Module, x: torch.Tensor, backend: str) -> None:
    """torch.compile(fullgraph=True) gives eager's loss and gradients (input and parameters)."""
    torch._dynamo.reset()
    eager_loss, eager_grads = _loss_and_grads(model, x)
    loss, grads = _loss_and_grads(torch.compile(model, fullgraph=True, backend=backend), x)
    torch.testing.assert_close(loss, eager_loss, rtol=1e-10, atol=1e-10)
    for got, want in zip(grads, eager_grads):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def check_export_keeps_ops(model: torch.nn.Module, x: torch.Tensor, op: str, count: int) -> None:
    """torch.export keeps ``count`` calls of the custom op ``op``, and the exported module gives the model's result."""
    exported = torch.export.export(model, (x,))
    targets = [str(node.target) for node in exported.graph.nodes if node.op == "call_function"]
    assert sum(op in t for t in targets) == count, targets
    torch.testing.assert_close(exported.module()(x), model(x))


def check_double_backward(ours, theirs, case: ConvCase | TCase, x, w, b) -> None:
    """A gradient penalty (grad of a grad) through the input and the weight: ``ours`` equals ``theirs``."""

    def penalty(conv):
        y = conv(x, w, b, **case.kwargs())
        (gx,) = torch.autograd.grad(y.square().sum(), [x], create_graph=True)
        return torch.autograd.grad(gx.square().sum(), [x, w, b])

    for got, want in zip(penalty(ours), penalty(theirs)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def result_row(shape: int, pass_: str, ratio: float, *, layout: str = "channels_last", **changes: object):
    """A measured GPU row for suite shape ``shape`` with cuDNN ratio ``ratio`` (triton-conv takes 1 ms)."""
    s = SHAPES_BY_NUMBER[shape]
    row = harness.ResultRow(
        timestamp="2026-01-01T00:00:00+00:00", run_id="r", gpu="NVIDIA H100 80GB HBM3", torch_version="2.11.0",
        triton_version="3.6.0", cuda_version="12.8", timing=harness.TIMING_CUDA, shape=shape, name=s.name,
        dims=s.dims, dtype="bfloat16", layout=layout, pass_=pass_, flops=pass_flops(s, pass_),
        min_bytes=pass_bytes(s, pass_, 2), check="ok", max_rel_error=1e-3, tolerance=5e-2, triton_ms=1.0,
        cudnn_ms=ratio, tflops=pass_flops(s, pass_) / 1e9, gbps=pass_bytes(s, pass_, 2) / 1e6, roofline_pct=50.0,
        ratio_cudnn=ratio, ceiling_tflops=798.0, ceiling_gbps=3000.0,
    )  # fmt: skip
    return dataclasses.replace(row, **changes)


def poison(t: torch.Tensor) -> None:
    """A NaN, +inf and -inf in three channels of ``t`` (at least 7 channels), one at a corner."""
    middle = tuple(size // 2 for size in t.shape[2:])
    t[(0, 1, *middle)] = float("nan")
    t[(0, 6, *(0 for _ in middle))] = float("inf")
    t[(t.shape[0] - 1, t.shape[1] - 1, *middle)] = float("-inf")


def assert_non_finite_like(got: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    """NaN, +inf and -inf exactly where ``expected`` has them, the finite values close."""
    assert expected.isnan().any() and expected.isinf().any() and expected.isfinite().any()
    assert torch.equal(got.isnan(), expected.isnan()), what
    assert torch.equal(got.isposinf(), expected.isposinf()), what
    assert torch.equal(got.isneginf(), expected.isneginf()), what
    finite = expected.isfinite()
    assert_close(got[finite], expected[finite].to(got.dtype), got.dtype, 1000, what)


def check_gated_recomputation(case: ConvCase, spec, x, w, b, dy) -> None:
    """The forward and input gradient of a kernel that flags non-finite results, each followed by
    a launch gated on its flag: the flag clear on finite data; after ``poison`` of ``x`` and
    ``dy``, set, and NaN and infinities exactly where torch's are."""
    from triton_conv.kernels import dispatch
    from triton_conv.kernels.common import recording_launches

    def flags_of(run) -> list[int]:
        """Run ``run``'s launches; the flags the gated launches read."""
        with recording_launches() as launches:
            run()
        for launch in launches:
            launch()
        return [int(launch.args["flag_ptr"]) for launch in launches if launch.constexprs.get("GATED")]

    y, dx = torch.empty_like(dy), torch.empty_like(x)
    assert flags_of(lambda: dispatch.forward(x, w, b, spec, y)) == [0]
    assert flags_of(lambda: dispatch.input_grad(dy, w, spec, dx)) == [0]
    poison(x)
    poison(dy)
    assert flags_of(lambda: dispatch.forward(x, w, b, spec, y)) == [1]
    assert flags_of(lambda: dispatch.input_grad(dy, w, spec, dx)) == [1]

    x64 = x.double().requires_grad_()
    expected_y = reference_forward(case, x64, w.double(), b.double() if b is not None else None)
    (expected_dx,) = torch.autograd.grad(expected_y, x64, dy.double())
    assert_non_finite_like(y, expected_y.detach(), "forward")
    assert_non_finite_like(dx, expected_dx, "input gradient")
