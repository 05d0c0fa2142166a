"""Transposed convolution: conv_transpose1d/2d/3d, the custom op, ConvTranspose* and convert_model,
against torch.nn.functional.conv_transpose* on a case table (forward and every gradient)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import triton_conv
from triton_conv import autograd as ops
from triton_conv.kernels.direct import plan_direct_input_grad
from triton_conv.kernels.epilogue import Epilogue
from triton_conv.kernels.gpu_compile import SHARED_MEMORY_LIMIT, compile_launch
from triton_conv.kernels.implicit_gemm_input_grad import INPUT_GRAD, plan_input_grad
from triton_conv.spec import conv_transpose_spec
from triton_conv.tuning.configs import candidate_configs

from .reference import DEVICE, DTYPES, THOROUGH, as_test_inputs, in_layout, relative_error, tolerance
from .test_ops import _loss_and_grads

pytestmark = pytest.mark.transpose

TORCH_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}
OUR_T = {1: triton_conv.conv_transpose1d, 2: triton_conv.conv_transpose2d, 3: triton_conv.conv_transpose3d}


@dataclass(frozen=True)
class TCase:
    """One transposed convolution: input (batch, in_channels, *size), weight (in, out/groups, *kernel)."""

    ndim: int
    batch: int
    in_channels: int
    out_channels: int
    size: tuple[int, ...]
    kernel: tuple[int, ...]
    stride: int | tuple[int, ...] = 1
    padding: int | tuple[int, ...] = 0
    output_padding: int | tuple[int, ...] = 0
    dilation: int | tuple[int, ...] = 1
    groups: int = 1
    bias: bool = True

    @property
    def id(self) -> str:
        parts = [f"{self.ndim}d-n{self.batch}-c{self.in_channels}k{self.out_channels}", "x".join(map(str, self.size))]
        parts.append("f" + "x".join(map(str, self.kernel)))
        for name in ("stride", "padding", "output_padding", "dilation", "groups"):
            value = getattr(self, name)
            if value != (0 if "padding" in name else 1):
                parts.append(f"{name[:2] if name != 'output_padding' else 'op'}{value}".replace(" ", ""))
        return "-".join(parts) + ("" if self.bias else "-nobias")

    def kwargs(self) -> dict:
        return dict(
            stride=self.stride,
            padding=self.padding,
            output_padding=self.output_padding,
            groups=self.groups,
            dilation=self.dilation,
        )

    @property
    def reduction(self) -> int:
        """The longest sum behind any element of the output or of a gradient."""
        taps = math.prod(self.kernel)
        pixels = self.batch * math.prod(self.size)
        return max(self.in_channels // self.groups * taps, self.out_channels // self.groups * taps, pixels)


CASES = [
    # 1-D: stride, dilation, output_padding not smaller than the stride (allowed by the dilation),
    # depthwise, a HiFi-GAN-like upsample (kernel 2*stride, padding stride/2).
    TCase(1, 2, 3, 5, (7,), (3,)),
    TCase(1, 2, 4, 6, (6,), (4,), stride=3, padding=2, output_padding=2, dilation=2),
    TCase(1, 1, 3, 4, (7,), (3,), output_padding=1, dilation=2),
    TCase(1, 2, 4, 4, (9,), (5,), stride=2, padding=2, output_padding=1, groups=4),
    TCase(1, 1, 4, 3, (5,), (16,), stride=8, padding=4),
    # 2-D: SD-VAE-like 3x3 s2 p1 op1, U-Net 2x2 s2, DCGAN 4x4 s2 p1, mixed per-dimension
    # arguments with groups, depthwise, few channels per group, GEMM groups, 1x1 stride 3
    # (phases no tap reaches: bias only), padding beyond the kernel.
    TCase(2, 2, 4, 6, (5, 6), (3, 3), stride=2, padding=1, output_padding=1),
    TCase(2, 2, 6, 4, (4, 5), (2, 2), stride=2),
    TCase(2, 1, 4, 3, (4, 4), (4, 4), stride=2, padding=1, bias=False),
    TCase(2, 2, 6, 4, (5, 4), (3, 2), stride=(2, 1), padding=(1, 0), output_padding=(1, 0), dilation=(1, 2), groups=2),
    TCase(2, 1, 5, 5, (5, 5), (3, 3), stride=2, padding=1, groups=5),
    TCase(2, 1, 4, 8, (4, 3), (3, 3), stride=2, groups=2),
    TCase(2, 1, 32, 32, (3, 4), (3, 3), stride=2, padding=1, groups=2),
    TCase(2, 1, 3, 4, (6, 5), (1, 1), stride=3),
    TCase(2, 1, 3, 4, (5, 5), (3, 3), padding=3, dilation=2),
    # 3-D: a video-decoder upsample, groups with output_padding, depthwise.
    TCase(3, 1, 4, 6, (2, 4, 4), (3, 4, 4), stride=(1, 2, 2), padding=(1, 1, 1)),
    TCase(3, 2, 4, 4, (3, 3, 2), (2, 2, 2), stride=2, output_padding=1, groups=2, bias=False),
    TCase(3, 1, 3, 3, (3, 3, 3), (3, 3, 3), stride=2, padding=1, output_padding=1, groups=3),
]
SUBSET = [CASES[i] for i in (1, 5, 9, 14)]


def make_inputs(case: TCase, dtype: torch.dtype, layout: str = "contiguous"):
    """Random input, weight, bias and output cotangent (values exact in ``dtype``), requiring grad."""
    x = torch.randn(case.batch, case.in_channels, *case.size, dtype=torch.float64)
    w = torch.randn(case.in_channels, case.out_channels // case.groups, *case.kernel, dtype=torch.float64)
    w /= math.sqrt(case.in_channels // case.groups * math.prod(case.kernel))
    b = torch.randn(case.out_channels, dtype=torch.float64) if case.bias else None
    return as_test_inputs((x, w, b), dtype, layout, requires_grad=True)


def check_case(case: TCase, dtype: torch.dtype, layout: str = "contiguous", **epilogue) -> None:
    """Output and the gradients of input, weight, bias (and residual) against torch in float64."""
    x, w, b = make_inputs(case, dtype, layout)
    leaves = [t for t in (x, w, b) if t is not None]
    reference = TORCH_T[case.ndim](*(t.double() if t is not None else None for t in (x, w, b)), **case.kwargs())
    residual = None
    if epilogue:
        residual = torch.randn(reference.shape, dtype=torch.float64).to(dtype).to(DEVICE).requires_grad_(True)
        leaves.append(residual)
        activation = {"relu": torch.relu, "gelu": F.gelu, "tanh": torch.tanh}[epilogue["activation"]]
        reference = activation(reference + residual.double())
    y = OUR_T[case.ndim](x, w, b, **case.kwargs(), residual=residual, **epilogue)
    # torch's rule: a channels-last output when the input or the weight is channels-last.
    if layout == "channels_last" and case.ndim > 1:
        expected_format = torch.channels_last if case.ndim == 2 else torch.channels_last_3d
        assert y.is_contiguous(memory_format=expected_format)
    dy = in_layout(torch.randn(reference.shape, dtype=torch.float64).to(dtype).to(DEVICE), layout)
    ours = torch.autograd.grad(y, leaves, dy)
    expected = torch.autograd.grad(reference, leaves, dy.double())
    tol = tolerance(dtype, case.reduction)
    for what, got, want in zip(
        ["output", "input", "weight", "bias", "residual"][: len(leaves) + 1], [y, *ours], [reference, *expected]
    ):
        assert got.shape == want.shape and got.dtype == dtype, f"{what}: {got.shape} {got.dtype}"
        err = relative_error(got, want)
        assert err <= tol, f"{what}: relative error {err:.3e} > {tol:.1e}"


def _ieee(fn):
    """float32 with IEEE products on CUDA too (TF32 follows torch.backends.cudnn.allow_tf32)."""
    saved = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        fn()
    finally:
        torch.backends.cudnn.allow_tf32 = saved


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_table_float64(case):
    check_case(case, torch.float64)


@pytest.mark.parametrize("case", CASES if THOROUGH else SUBSET, ids=lambda c: c.id)
def test_table_float32_ieee(case):
    _ieee(lambda: check_case(case, torch.float32))


@pytest.mark.parametrize("layout", ["channels_last", "strided_view", "permuted"])
@pytest.mark.parametrize("case", CASES if THOROUGH else SUBSET[:2], ids=lambda c: c.id)
def test_layouts(case, layout):
    check_case(case, torch.float64, layout)


@pytest.mark.parametrize("dtype", [d for d in DTYPES if d.itemsize == 2], ids=str)
@pytest.mark.parametrize("case", CASES if THOROUGH else SUBSET[1:3], ids=lambda c: c.id)
def test_half(case, dtype):
    check_case(case, dtype)


def test_complex_runs_torch_and_integers_are_rejected():
    x = torch.randn(1, 4, 5, dtype=torch.complex128)
    w = torch.randn(4, 2, 3, dtype=torch.complex128)
    with pytest.warns(UserWarning, match="complex128 runs torch's convolution"):
        ours = triton_conv.conv_transpose1d(x, w, stride=2, output_padding=1)
    torch.testing.assert_close(ours, F.conv_transpose1d(x, w, stride=2, output_padding=1))
    with pytest.raises(RuntimeError, match=r"conv_transpose1d\(\): .*float.* but got input of dtype torch.int64"):
        triton_conv.conv_transpose1d(x.real.long(), w.real.long())


@pytest.mark.parametrize("activation", ["relu", "gelu", "tanh"])
@pytest.mark.parametrize("case", [CASES[5], CASES[9]], ids=lambda c: c.id)
def test_fused_epilogue(case, activation):
    check_case(case, torch.float64, activation=activation)


@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_unbatched(ndim):
    case = next(c for c in SUBSET if c.ndim == ndim) if ndim != 3 else CASES[-1]
    x, w, b = make_inputs(case, torch.float64)
    ours = OUR_T[ndim](x[0], w, b, **case.kwargs())
    torch.testing.assert_close(ours, TORCH_T[ndim](x[0], w, b, **case.kwargs()), rtol=1e-12, atol=1e-12)


def test_zero_batch():
    case = CASES[5]
    x, w, b = make_inputs(case, torch.float64)
    x0 = x[:0].detach().requires_grad_(True)
    ours = triton_conv.conv_transpose2d(x0, w, b, **case.kwargs())
    reference = F.conv_transpose2d(x0, w, b, **case.kwargs())
    assert ours.shape == reference.shape
    grads = torch.autograd.grad(ours.sum(), [x0, w, b])
    for got, want in zip(grads, torch.autograd.grad(reference.sum(), [x0, w, b])):
        torch.testing.assert_close(got, want)


# ---------------------------------------------------------------------------------------------
# The custom op: opcheck, gradcheck, double backward, compile, export, the aten fallback


def _op_args(case: TCase):
    x, w, b = make_inputs(case, torch.float64)
    spec = conv_transpose_spec(x, w, b, **case.kwargs(), ndim=case.ndim)
    nd = case.ndim
    padding = spec.spatial(spec.pad_lo)
    output_padding = [lo - hi for lo, hi in zip(padding, spec.spatial(spec.pad_hi))]
    geometry = (spec.spatial(spec.stride), padding, output_padding, spec.spatial(spec.dilation)[:nd], case.groups)
    return x, w, b, spec, geometry


@pytest.mark.parametrize("case", [CASES[1], CASES[9]] if THOROUGH else [CASES[1]], ids=lambda c: c.id)
def test_opcheck(case):
    x, w, b, spec, geometry = _op_args(case)
    torch.library.opcheck(ops.conv_transpose_forward, (x, w, b, None, *geometry, "none"))
    residual = torch.randn(spec.in_shape, dtype=x.dtype, device=x.device, requires_grad=True)
    torch.library.opcheck(ops.conv_transpose_forward, (x, w, b, residual, *geometry, "silu"))


GRADCHECK_CASES = [
    TCase(1, 1, 2, 2, (4,), (3,), stride=2, padding=1, output_padding=1, dilation=2),
    TCase(2, 1, 2, 2, (3, 2), (2, 3), stride=(2, 1), groups=2),
]


@pytest.mark.parametrize("case", GRADCHECK_CASES if THOROUGH else GRADCHECK_CASES[:1], ids=lambda c: c.id)
def test_gradcheck_and_gradgradcheck(case):
    x, w, b = make_inputs(case, torch.float64)

    def conv_transpose(x, w, b):
        return OUR_T[case.ndim](x, w, b, **case.kwargs())

    assert torch.autograd.gradcheck(conv_transpose, (x, w, b), fast_mode=not THOROUGH)
    assert torch.autograd.gradgradcheck(conv_transpose, (x, w, b), fast_mode=not THOROUGH)


class _Decoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w1 = nn.Parameter(torch.randn(4, 3, 3, 3) / 5)
        self.b1 = nn.Parameter(torch.randn(3))
        self.w2 = nn.Parameter(torch.randn(3, 2, 2, 2) / 3)

    def forward(self, x):
        y = triton_conv.conv_transpose2d(x, self.w1, self.b1, stride=2, padding=1, output_padding=1, activation="relu")
        return triton_conv.conv_transpose2d(y, self.w2, None, stride=2)


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"] if THOROUGH else ["aot_eager"])
def test_compile_fullgraph_matches_eager(backend):
    torch._dynamo.reset()
    model = _Decoder().double().to(DEVICE)
    x = torch.randn(2, 4, 3, 4, dtype=torch.float64, device=DEVICE, requires_grad=True)
    eager_loss, eager_grads = _loss_and_grads(model, x)
    loss, grads = _loss_and_grads(torch.compile(model, fullgraph=True, backend=backend), x)
    torch.testing.assert_close(loss, eager_loss, rtol=1e-10, atol=1e-10)
    for got, want in zip(grads, eager_grads):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_export_keeps_ops():
    model = _Decoder().to(DEVICE)
    x = torch.randn(2, 4, 3, 4, device=DEVICE)
    exported = torch.export.export(model, (x,))
    targets = [str(node.target) for node in exported.graph.nodes if node.op == "call_function"]
    assert sum("triton_conv.conv_transpose_forward" in t for t in targets) == 2, targets
    torch.testing.assert_close(exported.module()(x), model(x))


def test_double_backward_matches_torch():
    """A gradient penalty (grad of a grad) through the input and the weight equals torch's."""
    case = CASES[8]
    x, w, b = make_inputs(case, torch.float64)

    def penalty(conv, x, w, b):
        y = conv(x, w, b, **case.kwargs())
        (gx,) = torch.autograd.grad(y.square().sum(), [x], create_graph=True)
        return gx.square().sum()

    ours = torch.autograd.grad(penalty(triton_conv.conv_transpose2d, x, w, b), [x, w, b])
    ref = torch.autograd.grad(penalty(F.conv_transpose2d, x, w, b), [x, w, b])
    for got, want in zip(ours, ref):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("case", [CASES[1], CASES[8]], ids=lambda c: c.id)
def test_aten_fallback_matches_kernels(case, monkeypatch):
    """CPU tensors without the interpreter run aten: the same values and gradients (negative
    trailing padding of the transposed convolution included: output_padding > padding)."""
    from triton_conv.autograd import ops as op_module
    from triton_conv.autograd import transpose as transpose_module

    def run():
        x, w, b = make_inputs(case, torch.float64)
        y = OUR_T[case.ndim](x, w, b, **case.kwargs())
        (gx,) = torch.autograd.grad(y.square().sum(), [x], create_graph=True)
        return (y, gx, *torch.autograd.grad(gx.square().sum(), [x, w, b]))

    torch.manual_seed(1)
    kernels = run()
    for module in (op_module, transpose_module):
        monkeypatch.setattr(module, "_use_kernels", lambda t: False)
    torch.manual_seed(1)
    for got, want in zip(run(), kernels):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# Rejected inputs: the same exception type as torch's


def _bad(ndim: int) -> list[tuple[str, tuple, dict]]:
    """(id, (input shape, weight shape, bias shape or None), kwargs) torch rejects."""
    s, k = (5,) * ndim, (3,) * ndim
    return [
        ("output_padding_not_smaller", ((1, 4, *s), (4, 2, *k), None), dict(stride=2, output_padding=2)),
        ("output_padding_stride1", ((1, 4, *s), (4, 2, *k), None), dict(output_padding=1)),
        ("negative_output_padding", ((1, 4, *s), (4, 2, *k), None), dict(stride=2, output_padding=-1)),
        ("output_padding_length", ((1, 4, *s), (4, 2, *k), None), dict(output_padding=(0,) * (ndim + 1))),
        ("groups_not_dividing", ((1, 4, *s), (4, 2, *k), None), dict(groups=3)),
        ("groups_zero", ((1, 4, *s), (4, 2, *k), None), dict(groups=0)),
        ("channels", ((1, 3, *s), (4, 2, *k), None), {}),
        ("bias_size", ((1, 4, *s), (4, 2, *k), (3,)), {}),
        ("stride_zero", ((1, 4, *s), (4, 2, *k), None), dict(stride=0)),
        ("negative_padding", ((1, 4, *s), (4, 2, *k), None), dict(padding=-1)),
        ("output_too_small", ((1, 4, *s), (4, 2, *k), None), dict(padding=5)),
        ("input_rank", ((4,), (4, 2, *k), None), {}),
        ("padding_string", ((1, 4, *s), (4, 2, *k), None), dict(padding="same")),
        ("empty_spatial", ((1, 4, 0, *s[1:]), (4, 2, *k), None), {}),
    ]


BAD = [pytest.param(ndim, *rest, id=f"{ndim}d-{name}") for ndim in (1, 2, 3) for name, *rest in _bad(ndim)]


@pytest.mark.parametrize(("ndim", "shapes", "kwargs"), BAD)
def test_rejected_like_torch(ndim, shapes, kwargs):
    x, w, b = (torch.randn(shape) if shape is not None else None for shape in shapes)
    with pytest.raises(Exception) as torch_error:
        TORCH_T[ndim](x, w, b, **kwargs)
    with pytest.raises(type(torch_error.value)):
        OUR_T[ndim](x, w, b, **kwargs)


def test_module_output_size_errors_like_torch():
    ours = triton_conv.ConvTranspose2d(4, 2, 3, stride=2)
    theirs = nn.ConvTranspose2d(4, 2, 3, stride=2)
    x = torch.randn(1, 4, 5, 5)
    for size in ([10, 10], [13, 11], [1, 2, 3], [1, 2, 11, 11, 3]):
        with pytest.raises(ValueError) as torch_error:
            theirs(x, output_size=size)
        with pytest.raises(ValueError, match=str(torch_error.value).split(",")[0][:20]):
            ours(x, output_size=size)
    with pytest.raises(ValueError, match="zeros"):
        triton_conv.ConvTranspose2d(4, 2, 3, padding_mode="reflect")(x)


# ---------------------------------------------------------------------------------------------
# Modules and convert_model


@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_module_matches_torch_with_output_size(ndim):
    torch_cls = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}[ndim]
    reference = torch_cls(4, 6, 3, stride=2, padding=1, groups=2, dtype=torch.float64)
    ours = triton_conv.convert_model(torch_cls(4, 6, 3, stride=2, padding=1, groups=2, dtype=torch.float64))
    ours.load_state_dict(reference.state_dict())
    assert isinstance(ours, torch_cls) and type(ours).__name__ == f"ConvTranspose{ndim}d"
    x = torch.randn(2, 4, *(3,) * ndim, dtype=torch.float64)
    size = [6] * ndim  # the larger of the two sizes stride 2 allows
    torch.testing.assert_close(ours(x, output_size=size), reference(x, output_size=size), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ours(x), reference(x), rtol=1e-12, atol=1e-12)
    assert type(triton_conv.revert_model(ours)) is torch_cls


class _UNet(nn.Module):
    """Conv2d down, ConvTranspose2d up, skip connections by concatenation."""

    def __init__(self) -> None:
        super().__init__()
        self.enc1 = nn.Conv2d(3, 8, 3, padding=1)
        self.down1 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.down2 = nn.Conv2d(16, 16, 3, stride=2, padding=1)
        self.up2 = nn.ConvTranspose2d(16, 16, 2, stride=2)
        self.dec2 = nn.Conv2d(32, 16, 3, padding=1)
        self.up1 = nn.ConvTranspose2d(16, 8, 3, stride=2, padding=1, output_padding=1)
        self.dec1 = nn.Conv2d(16, 8, 3, padding=1)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        e1 = torch.relu(self.enc1(x))
        e2 = torch.relu(self.down1(e1))
        bottom = torch.relu(self.down2(e2))
        d2 = torch.relu(self.dec2(torch.cat([self.up2(bottom), e2], 1)))
        d1 = torch.relu(self.dec1(torch.cat([self.up1(d2, output_size=e1.shape[-2:]), e1], 1)))
        return self.head(d1)


class _AtenOps(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.add(str(func))
        return func(*args, **(kwargs or {}))


def test_unet_converted_matches_torch():
    torch.manual_seed(0)
    reference = _UNet().double().to(DEVICE)
    model = _UNet().double().to(DEVICE)
    model.load_state_dict(reference.state_dict())
    triton_conv.convert_model(model)
    torch_convs = (nn.Conv2d, nn.ConvTranspose2d)
    triton_convs = (triton_conv.Conv2d, triton_conv.ConvTranspose2d)
    assert all(isinstance(m, triton_convs) for m in model.modules() if isinstance(m, torch_convs))
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64, device=DEVICE, requires_grad=True)
    with _AtenOps() as seen:
        y = model(x)
        grads = torch.autograd.grad(y.square().sum(), [x, *model.parameters()])
    assert not [n for n in seen.names if "convolution" in n], sorted(seen.names)
    y_ref = reference(x)
    ref_grads = torch.autograd.grad(y_ref.square().sum(), [x, *reference.parameters()])
    assert relative_error(y, y_ref) < 1e-10
    for got, want in zip(grads, ref_grads):
        assert relative_error(got, want) < 1e-10


# ---------------------------------------------------------------------------------------------
# The transposed forward's launches compile for GPU targets (bias and the fused epilogue on)


def _fused_launch(direct: bool, dtype: torch.dtype):
    x = torch.empty(2, 32, 8, 8, dtype=dtype).to(memory_format=torch.channels_last)
    groups = 32 if direct else 1
    w = torch.empty(32, 64 // groups, 3, 3, dtype=dtype)
    b = torch.empty(64, dtype=dtype)
    spec = conv_transpose_spec(x, w, b, 2, 1, 1, groups, 1, ndim=2)
    y = torch.empty(spec.in_shape, dtype=dtype).to(memory_format=torch.channels_last)
    epilogue = Epilogue("silu", torch.empty_like(y), torch.empty_like(y))
    if direct:
        return plan_direct_input_grad(x, w, spec, y, b, epilogue)
    return plan_input_grad(x, w, spec, y, candidate_configs(INPUT_GRAD, dtype, "ieee")[0], b, epilogue)


@pytest.mark.compile
@pytest.mark.parametrize("arch", [90, 80] if THOROUGH else [90], ids=lambda a: f"sm{a}")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32] if THOROUGH else [torch.bfloat16], ids=str)
@pytest.mark.parametrize("direct", [False, True], ids=["implicit_gemm", "direct"])
def test_fused_transposed_launch_compiles(direct, dtype, arch, gpu_tiles):
    info = compile_launch(_fused_launch(direct, dtype), arch)
    assert info.shared_bytes <= SHARED_MEMORY_LIMIT[arch], f"shared memory over the sm_{arch} limit: {info}"
    assert info.spill_bytes == 0, f"register spills: {info}"


class _ScaledUp(nn.ConvTranspose2d):
    """Keeps torch's forward: converted with include_subclasses."""


class _OwnForward(nn.ConvTranspose2d):
    """Calls F.conv_transpose2d in its own forward: nothing for triton_conv to route, left alone."""

    def forward(self, input, output_size=None):
        return 2 * super().forward(input, output_size)


def test_convert_transposed_subclasses():
    model = nn.Sequential(_ScaledUp(4, 2, 3, stride=2), _OwnForward(2, 2, 1)).double()
    reference = [m.weight.detach().clone() for m in model]
    x = torch.randn(1, 4, 3, 3, dtype=torch.float64)
    expected = model(x)
    triton_conv.convert_model(model, include_subclasses=True)
    assert isinstance(model[0], _ScaledUp) and isinstance(model[0], triton_conv.modules._TritonConvTransposeMixin)
    assert type(model[1]) is _OwnForward
    torch.testing.assert_close(model(x), expected, rtol=1e-12, atol=1e-12)
    triton_conv.revert_model(model)
    assert type(model[0]) is _ScaledUp and all(torch.equal(m.weight, w) for m, w in zip(model, reference))
