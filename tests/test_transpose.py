"""Transposed convolution: conv_transpose1d/2d/3d, the custom op, ConvTranspose* and convert_model,
against torch.nn.functional.conv_transpose* on a case table (forward and every gradient)."""

from __future__ import annotations

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
from triton_conv.kernels.implicit_gemm_input_grad import plan_input_grad
from triton_conv.spec import conv_transpose_spec
from triton_conv.testing import TORCH_CONV_TRANSPOSE, TRITON_CONV_TRANSPOSE, relative_error
from triton_conv.tuning.configs import candidate_configs

from .cases import TRANSPOSED_CASES, TRANSPOSED_GRADCHECK_CASES, TRANSPOSED_SUBSET, named, named_cases, params
from .checks import check_compile_matches_eager, check_double_backward, check_export_keeps_ops, check_transposed
from .reference import DEVICE, DTYPES, TCase
from .reference import make_transposed_inputs as make_inputs

pytestmark = pytest.mark.transpose


def _ieee(fn):
    """float32 with IEEE products on CUDA too (TF32 follows torch.backends.cudnn.allow_tf32)."""
    saved = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        fn()
    finally:
        torch.backends.cudnn.allow_tf32 = saved


@pytest.mark.parametrize("case", params(TRANSPOSED_CASES))
def test_table_float64(case):
    check_transposed(case, torch.float64)


@pytest.mark.parametrize("case", params(TRANSPOSED_CASES, TRANSPOSED_SUBSET))
def test_table_float32_ieee(case):
    _ieee(lambda: check_transposed(case, torch.float32))


@pytest.mark.parametrize("layout", ["channels_last", "strided_view", "permuted"])
@pytest.mark.parametrize(
    "case", params(TRANSPOSED_CASES, named_cases("strided_dilated_transposed_1d", "sdvae_upsample_2d"))
)
def test_layouts(case, layout):
    check_transposed(case, torch.float64, layout)


@pytest.mark.parametrize("dtype", [d for d in DTYPES if d.itemsize == 2], ids=str)
@pytest.mark.parametrize("case", params(TRANSPOSED_CASES, named_cases("sdvae_upsample_2d", "depthwise_transposed_2d")))
def test_half(case, dtype):
    check_transposed(case, dtype)


def test_complex_runs_torch_and_integers_are_rejected():
    x = torch.randn(1, 4, 5, dtype=torch.complex128)
    w = torch.randn(4, 2, 3, dtype=torch.complex128)
    with pytest.warns(UserWarning, match="complex128 runs torch's convolution"):
        ours = triton_conv.conv_transpose1d(x, w, stride=2, output_padding=1)
    torch.testing.assert_close(ours, F.conv_transpose1d(x, w, stride=2, output_padding=1))
    with pytest.raises(RuntimeError, match=r"conv_transpose1d\(\): .*float.* but got input of dtype torch.int64"):
        triton_conv.conv_transpose1d(x.real.long(), w.real.long())


@pytest.mark.parametrize("activation", ["relu", "gelu", "tanh"])
@pytest.mark.parametrize("case", params(named_cases("sdvae_upsample_2d", "depthwise_transposed_2d")))
def test_fused_epilogue(case, activation):
    check_transposed(case, torch.float64, activation=activation)


@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_unbatched(ndim):
    case = named({1: "strided_dilated_transposed_1d", 2: "sdvae_upsample_2d", 3: "depthwise_transposed_3d"}[ndim])
    x, w, b = make_inputs(case, torch.float64)
    ours = TRITON_CONV_TRANSPOSE[ndim](x[0], w, b, **case.kwargs())
    torch.testing.assert_close(ours, TORCH_CONV_TRANSPOSE[ndim](x[0], w, b, **case.kwargs()), rtol=1e-12, atol=1e-12)


def test_zero_batch():
    case = named("sdvae_upsample_2d")
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


@pytest.mark.parametrize(
    "case",
    params(
        named_cases("strided_dilated_transposed_1d", "depthwise_transposed_2d"),
        named_cases("strided_dilated_transposed_1d"),
    ),
)
def test_opcheck(case):
    x, w, b, spec, geometry = _op_args(case)
    torch.library.opcheck(ops.conv_transpose_forward, (x, w, b, None, *geometry, "none"))
    residual = torch.randn(spec.in_shape, dtype=x.dtype, device=x.device, requires_grad=True)
    torch.library.opcheck(ops.conv_transpose_forward, (x, w, b, residual, *geometry, "silu"))


# Fast mode checks random projections of the Jacobian; the exact mode (slow) checks every entry.
GRADCHECK_MODES = [pytest.param(True, id="fast"), pytest.param(False, id="exact", marks=pytest.mark.slow)]


@pytest.mark.parametrize("fast_mode", GRADCHECK_MODES)
@pytest.mark.parametrize("case", params(TRANSPOSED_GRADCHECK_CASES, named_cases("gradcheck_transposed_1d")))
def test_gradcheck_and_gradgradcheck(case, fast_mode):
    x, w, b = make_inputs(case, torch.float64)

    def conv_transpose(x, w, b):
        return TRITON_CONV_TRANSPOSE[case.ndim](x, w, b, **case.kwargs())

    assert torch.autograd.gradcheck(conv_transpose, (x, w, b), fast_mode=fast_mode)
    assert torch.autograd.gradgradcheck(conv_transpose, (x, w, b), fast_mode=fast_mode)


class _Decoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w1 = nn.Parameter(torch.randn(4, 3, 3, 3) / 5)
        self.b1 = nn.Parameter(torch.randn(3))
        self.w2 = nn.Parameter(torch.randn(3, 2, 2, 2) / 3)

    def forward(self, x):
        y = triton_conv.conv_transpose2d(x, self.w1, self.b1, stride=2, padding=1, output_padding=1, activation="relu")
        return triton_conv.conv_transpose2d(y, self.w2, None, stride=2)


@pytest.mark.parametrize("backend", ["aot_eager", pytest.param("inductor", marks=pytest.mark.slow)])
def test_compile_fullgraph_matches_eager(backend):
    model = _Decoder().double().to(DEVICE)
    x = torch.randn(2, 4, 3, 4, dtype=torch.float64, device=DEVICE, requires_grad=True)
    check_compile_matches_eager(model, x, backend)


def test_export_keeps_ops():
    model = _Decoder().to(DEVICE)
    check_export_keeps_ops(model, torch.randn(2, 4, 3, 4, device=DEVICE), "triton_conv.conv_transpose_forward", 2)


def test_double_backward_matches_torch():
    """A gradient penalty (grad of a grad) through the input and the weight equals torch's."""
    case = named("mixed_grouped_transposed_2d")
    x, w, b = make_inputs(case, torch.float64)
    check_double_backward(TRITON_CONV_TRANSPOSE[2], TORCH_CONV_TRANSPOSE[2], case, x, w, b)


@pytest.mark.parametrize("case", params(named_cases("strided_dilated_transposed_1d", "mixed_grouped_transposed_2d")))
def test_aten_fallback_matches_kernels(case, monkeypatch):
    """CPU tensors without the interpreter run aten: the same values and gradients (negative
    trailing padding of the transposed convolution included: output_padding > padding)."""
    from triton_conv.autograd import ops as op_module
    from triton_conv.autograd import transpose as transpose_module

    def run():
        x, w, b = make_inputs(case, torch.float64)
        y = TRITON_CONV_TRANSPOSE[case.ndim](x, w, b, **case.kwargs())
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
        TORCH_CONV_TRANSPOSE[ndim](x, w, b, **kwargs)
    with pytest.raises(type(torch_error.value)):
        TRITON_CONV_TRANSPOSE[ndim](x, w, b, **kwargs)


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
    return plan_input_grad(x, w, spec, y, candidate_configs("input_grad", dtype, "ieee")[0], b, epilogue)


@pytest.mark.compile
@pytest.mark.parametrize("arch", [pytest.param(90, id="sm90"), pytest.param(80, id="sm80", marks=pytest.mark.slow)])
@pytest.mark.parametrize(
    "dtype",
    [pytest.param(torch.bfloat16, id="bfloat16"), pytest.param(torch.float32, id="float32", marks=pytest.mark.slow)],
)
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
