"""The forward convolution through tensor descriptors (TMA): results against torch.nn.functional,
where the dispatch runs it, and its sm_90 compile."""

import math

import pytest
import torch
from triton.runtime.jit import JITFunction, mangle_type
from triton_conv.perf.compiled_code import dot_loop

import triton_conv
from triton_conv.kernels import dispatch, gpu_compile
from triton_conv.kernels import implicit_gemm_forward_tma as tma
from triton_conv.kernels.common import recording_launches
from triton_conv.kernels.epilogue import PLAIN, TORCH_ACTIVATIONS, Epilogue
from triton_conv.kernels.gpu_compile import compile_launch
from triton_conv.spec import conv_spec, output_memory_format
from triton_conv.tune import ConvProblem, problem_keys
from triton_conv.tuning import select
from triton_conv.tuning.configs import KernelConfig

from .reference import DEVICE, ConvCase, assert_close, in_layout, make_inputs, reference_forward

pytestmark = pytest.mark.forward

# Odd sizes, padding beyond the filter's reach (boxes wholly outside the input), dilation,
# groups whose channels start mid-tensor, output channels that no block divides, 1-D and 3-D.
CASES = [
    ConvCase(2, 2, 16, 8, (5, 7), (3, 3), padding=1),
    ConvCase(2, 1, 32, 12, (6, 9), (3, 3), padding=(3, 2), dilation=(2, 1)),
    ConvCase(2, 2, 32, 24, (5, 5), (3, 1), padding=(1, 0), groups=2),
    ConvCase(3, 1, 16, 8, (3, 4, 5), (3, 3, 3), padding=1),
    ConvCase(1, 2, 16, 8, (13,), (4,), padding="same", dilation=2),
    # Images smaller than the tile: boxes of several whole images, the last one partly past N.
    ConvCase(2, 5, 16, 8, (4, 4), (3, 3), padding=1),
    ConvCase(1, 3, 32, 8, (8,), (5,), padding=2, groups=2),
]
# Few pixels and channels per block: several boxes per image and channel blocks per tap.
SMALL_TILE = KernelConfig(block_m=16, block_n=8, block_k=16, num_warps=4, num_stages=1)


@pytest.fixture(autouse=True)
def _tma_on(monkeypatch):
    monkeypatch.setattr(tma, "ENABLED", True)


def _conv_tma(x, w, b, case, config=None, epilogue=PLAIN, out_layout="channels_last"):
    spec = conv_spec(x, w, b, **case.kwargs(), ndim=case.ndim)
    y = in_layout(torch.empty(spec.out_shape, dtype=x.dtype, device=x.device), out_layout)
    tma.plan_forward_tma(x, w, b, spec, y, config, epilogue)()
    return y


@pytest.mark.parametrize("config", [None, SMALL_TILE], ids=["heuristic", "small"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_tma_forward_matches_torch(case, dtype, config):
    x, w, b = make_inputs(case, dtype, "channels_last")
    y = _conv_tma(x, w, b, case, config)
    assert_close(y, reference_forward(case, x, w, b), dtype, case.reduction, f"tma forward {case.id}")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_tma_forward_half(dtype):
    case = CASES[1]
    x, w, b = make_inputs(case, dtype, "channels_last")
    y = _conv_tma(x, w, b, case, SMALL_TILE)
    assert_close(y, reference_forward(case, x, w, b), dtype, case.reduction, f"tma forward {case.id}")


@pytest.mark.parametrize("out_layout", ["channels_last", "contiguous"])
@pytest.mark.parametrize("activation", ["silu", "relu"])
def test_tma_epilogue(activation, out_layout):
    """Bias, residual, saved pre-activation and activation, into either output layout."""
    case = CASES[0]
    x, w, b = make_inputs(case, torch.float64, "channels_last")
    reference = reference_forward(case, x, w, b)
    residual = torch.randn_like(reference)
    pre_activation = in_layout(torch.empty_like(reference), out_layout)
    epilogue = Epilogue(activation, residual, pre_activation)
    y = _conv_tma(x, w, b, case, SMALL_TILE, epilogue, out_layout)
    expected = reference + residual
    assert_close(pre_activation, expected, torch.float64, case.reduction, "pre-activation")
    assert_close(y, TORCH_ACTIVATIONS[activation](expected), torch.float64, case.reduction, "output")


# Input gradients as the forward of the flipped filter: K/groups (the reduction) a multiple of 16;
# padding beyond the filter's reach (the flipped problem's leading padding negative), dilation,
# groups, asymmetric 'same' padding, 1-D and 3-D.
INPUT_GRAD_CASES = [
    ConvCase(2, 2, 8, 16, (5, 7), (3, 3), padding=1),
    ConvCase(2, 1, 12, 32, (6, 9), (3, 3), padding=(5, 2), dilation=(2, 1)),
    ConvCase(2, 2, 24, 32, (5, 5), (3, 1), padding=(1, 0), groups=2),
    ConvCase(3, 1, 8, 16, (3, 4, 5), (3, 3, 3), padding=1),
    ConvCase(1, 2, 8, 16, (13,), (4,), padding="same", dilation=2),
]


def _tma_input_grad(dy, w, case, config=None, epilogue=PLAIN, bias=None):
    """dx through the TMA forward kernel, as ``dispatch.input_grad`` runs it."""
    x = torch.empty(case.batch, case.in_channels, *case.size, dtype=w.dtype)
    spec = conv_spec(x, w, None, **case.kwargs(), ndim=case.ndim)
    dx = in_layout(torch.empty(spec.in_shape, dtype=dy.dtype, device=dy.device), "channels_last")
    forward = spec.input_grad_as_forward()
    tma.plan_forward_tma(dy, tma.input_grad_filter(w, spec.groups), bias, forward, dx, config, epilogue)()
    return dx


@pytest.mark.parametrize("config", [None, SMALL_TILE], ids=["heuristic", "small"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("case", INPUT_GRAD_CASES, ids=lambda c: c.id)
def test_tma_input_grad_matches_torch(case, dtype, config):
    x, w, b = make_inputs(case, dtype, "channels_last", requires_grad=True)
    y = reference_forward(case, x, w, b)
    dy = in_layout(torch.randn(y.shape, dtype=torch.float64, device=DEVICE).to(dtype), "channels_last")
    (expected,) = torch.autograd.grad(y, x, dy.double())
    dx = _tma_input_grad(dy, w.detach(), case, config)
    reduction = case.out_channels // case.groups * math.prod(case.kernel)
    assert_close(dx, expected.to(dtype), dtype, reduction, f"tma input grad {case.id}")


def test_transposed_conv_epilogue_through_tma():
    """A stride-1 transposed convolution is this input gradient with bias, residual and activation."""
    case = INPUT_GRAD_CASES[2]
    x, w, b = make_inputs(case, torch.float64, "channels_last", requires_grad=True)
    y = reference_forward(case, x, w, b)
    dy = in_layout(torch.randn(y.shape, dtype=torch.float64, device=DEVICE), "channels_last")
    (plain,) = torch.autograd.grad(y, x, dy)
    bias = torch.randn(case.in_channels, dtype=torch.float64, device=DEVICE)
    residual = torch.randn_like(plain)
    expected = TORCH_ACTIVATIONS["silu"](plain + bias[:, None, None] + residual)
    dx = _tma_input_grad(dy, w.detach(), case, SMALL_TILE, Epilogue("silu", residual, None), bias)
    assert_close(dx, expected, torch.float64, case.reduction, "transposed conv")


def test_dispatch_runs_tma_for_the_input_grad():
    """Where the flipped forward qualifies (unit steps, K/groups a multiple of the block; a
    default-layout dy through its channels-last copy): the TMA kernel; a step of 2 keeps the
    input-gradient kernel. Both match torch."""
    if not tma.has_tma(torch.device(DEVICE)):
        pytest.skip(f"{DEVICE} has no tensor-memory accelerator: the pointer kernel runs")
    tma_kernel, pointer_kernel = "implicit_gemm_forward_tma_kernel", "implicit_gemm_input_grad_kernel"
    for stride, layout, kernel in (
        (1, "channels_last", tma_kernel),
        (1, "contiguous", tma_kernel),
        (2, "channels_last", pointer_kernel),
    ):
        case = ConvCase(2, 2, 16, 16, (4, 8), (3, 3), stride=stride, padding=1)
        x, w, b = make_inputs(case, torch.float32, layout, requires_grad=True)
        spec = conv_spec(x, w, b, **case.kwargs(), ndim=2)
        y = reference_forward(case, x, w, b)
        dy = in_layout(torch.randn(y.shape, device=DEVICE), layout)
        dx = in_layout(torch.empty_like(x), layout)
        with recording_launches() as launches:
            dispatch.input_grad(dy, w.detach(), spec, dx)
        assert [launch.kernel.fn.__name__ for launch in launches] == [kernel]
        launches[0]()
        (expected,) = torch.autograd.grad(y, x, dy.double())
        assert_close(dx, expected.float(), torch.float32, case.reduction, f"stride {stride}, {layout}")


def _planned_kernel(x, w, **kwargs):
    spec = conv_spec(x, w, None, **{"stride": 1, "padding": 1, "dilation": 1, "groups": 1, **kwargs}, ndim=x.dim() - 2)
    y = torch.empty(spec.out_shape, dtype=x.dtype, device=x.device, memory_format=output_memory_format(x, w))
    with recording_launches() as launches:
        dispatch.forward(x, w, None, spec, y)
    (launch,) = launches
    return launch.kernel.fn.__name__


def _channels_last(*shape, dtype=torch.float32):
    return in_layout(torch.randn(*shape, dtype=dtype, device=DEVICE), "channels_last")


def test_dispatch_runs_tma_where_it_applies():
    if not tma.has_tma(torch.device(DEVICE)):
        pytest.skip(f"{DEVICE} has no tensor-memory accelerator: the pointer kernel runs")
    # 4x8 output images: one box each, nothing wasted.
    assert _planned_kernel(_channels_last(2, 16, 4, 8), torch.randn(8, 16, 3, 3)) == "implicit_gemm_forward_tma_kernel"
    grouped = _planned_kernel(_channels_last(2, 32, 4, 8), torch.randn(8, 16, 3, 3), groups=2)
    assert grouped == "implicit_gemm_forward_tma_kernel"
    volume = _planned_kernel(_channels_last(1, 16, 2, 4, 4), torch.randn(8, 16, 3, 3, 3))
    assert volume == "implicit_gemm_forward_tma_kernel"
    # The default layout too, through the channels-last copy the pointer kernel would read.
    nchw = _planned_kernel(torch.randn(2, 16, 4, 8, device=DEVICE), torch.randn(8, 16, 3, 3))
    assert nchw == "implicit_gemm_forward_tma_kernel"


# Why the pointer kernel runs: the input layout and shape, the weight shape, conv arguments.
POINTER_CASES = {
    "stride 2": ("channels_last", (2, 16, 8, 16), (8, 16, 3, 3), {"stride": 2}),
    "24 channels, 32-deep blocks": ("channels_last", (2, 24, 4, 8), (8, 24, 3, 3), {}),
    "48 channels, 64-deep blocks": ("channels_last", (2, 48, 4, 8), (8, 48, 3, 3), {}),
    "no padding": ("channels_last", (2, 16, 4, 8), (8, 16, 1, 1), {"padding": 0}),
    "boxes waste 45% of their pixels": ("channels_last", (2, 16, 5, 7), (8, 16, 3, 3), {}),
}


@pytest.mark.parametrize("why", POINTER_CASES)
def test_dispatch_keeps_pointer_kernel(why):
    layout, x_shape, w_shape, kwargs = POINTER_CASES[why]
    x = in_layout(torch.randn(x_shape, device=DEVICE), layout)
    assert _planned_kernel(x, torch.randn(w_shape), **kwargs) == "implicit_gemm_forward_kernel", why


def test_dispatch_keeps_pointer_kernel_for_misaligned_input():
    storage = torch.randn(2 * 16 * 4 * 8 + 1, device=DEVICE)
    x = storage[1:].view(2, 4, 8, 16).permute(0, 3, 1, 2)
    assert x.stride(1) == 1 and x.data_ptr() % 16 != 0
    assert _planned_kernel(x, torch.randn(8, 16, 3, 3)) == "implicit_gemm_forward_kernel"


def test_reduction_block_must_divide_channels():
    case = CASES[0]
    x, w, b = make_inputs(case, torch.float32, "channels_last")
    with pytest.raises(ValueError, match="not a multiple of BLOCK_K"):
        _conv_tma(x, w, b, case, KernelConfig(16, 8, 32, 4, 1))


def test_kill_switch(monkeypatch):
    monkeypatch.setattr(tma, "ENABLED", False)
    assert _planned_kernel(_channels_last(2, 16, 4, 8), torch.randn(8, 16, 3, 3)) == "implicit_gemm_forward_kernel"


def test_conv2d_through_tma():
    """The public function (through the TMA kernel on the dispatch test's shape) matches torch."""
    case = ConvCase(2, 2, 16, 8, (4, 8), (3, 3), padding=1)
    x, w, b = make_inputs(case, torch.float32, "channels_last")
    y = triton_conv.conv2d(x, w, b, padding=1)
    assert_close(y, reference_forward(case, x, w, b), torch.float32, case.reduction, "conv2d")


@pytest.mark.parametrize(
    "size, batch, box",
    [
        ((1, 56, 56), 8, (1, 1, 2, 64)),
        ((16, 56, 56), 8, (1, 2, 8, 8)),
        ((1, 14, 14), 8, (1, 1, 8, 16)),
        ((1, 1, 600), 8, (1, 1, 1, 128)),
        ((1, 4, 4), 64, (8, 1, 4, 4)),
        ((2, 4, 8), 64, (2, 2, 4, 8)),
        ((1, 1, 20), 64, (4, 1, 1, 32)),
        ((1, 1, 200), 64, (1, 1, 1, 128)),
        ((1, 4, 4), 9, (8, 1, 4, 4)),
        ((1, 4, 4), 1, (1, 1, 4, 32)),
    ],
)
def test_box_shape(size, batch, box):
    """Fewest pixels computed per image for 128-pixel tiles, the images past the batch's end
    included, the widest W among equals; several images per box only where it holds each whole."""
    assert tma.box_shape(128, size, batch) == box


def test_box_use_counts_the_images_past_the_batch():
    """Boxes of 8 4x4 images over 64 images waste nothing; over 9, the second box computes 7
    images past the end (16 computed for 9), which the dispatch leaves to the pointer kernel."""
    assert tma.box_use(128, (1, 4, 4), 64) == 1
    assert tma.box_use(128, (1, 4, 4), 9) == 9 / 16 < tma.MIN_BOX_USE


@pytest.mark.parametrize("shape, images", [((2, 64, 8, 16), 1), ((32, 64, 4, 4), 8)], ids=["8x16", "4x4"])
def test_tma_compiles_for_sm90(gpu_tiles, shape, images):
    """wgmma fed by TMA copies in one loop over taps x channel blocks, pipelined, no spills; for
    images smaller than the tile too, whose boxes hold several (one image alone is 16 rows,
    too few for wgmma)."""
    x = torch.empty(*shape, dtype=torch.bfloat16).to(memory_format=torch.channels_last)
    w = torch.empty(64, 64, 3, 3, dtype=torch.bfloat16).to(memory_format=torch.channels_last)
    spec = conv_spec(x, w, None, stride=1, padding=1, dilation=1, groups=1, ndim=2)
    y = torch.empty(spec.out_shape, dtype=x.dtype, memory_format=torch.channels_last)
    launch = tma.plan_forward_tma(x, w, None, spec, y)
    assert launch.constexprs["BLOCK_IMAGES"] == images
    info = compile_launch(launch, 90, assembly=True)
    assert info.uses_wgmma and info.spill_bytes == 0
    assert "async_tma_copy_global_to_local" in info.assembly.ttgir
    loop = dot_loop(info.assembly.ttgir)
    assert loop is not None and loop.verdict == "across taps"


def test_compile_signature_of_descriptors_is_tritons():
    """``gpu_compile`` types a descriptor argument as Triton's own launcher does."""
    x = _channels_last(2, 16, 4, 8, dtype=torch.bfloat16)
    w = torch.randn(8, 16, 3, 3, dtype=torch.bfloat16)
    spec = conv_spec(x, w, None, stride=1, padding=1, dilation=1, groups=1, ndim=2)
    launch = tma.plan_forward_tma(x, w, None, spec, torch.empty(spec.out_shape, dtype=x.dtype))
    request = gpu_compile._Request.of(launch, 90, False)
    kernel = JITFunction(tma.implicit_gemm_forward_tma_kernel.fn)  # as the compile process sees it
    signature, _, _ = gpu_compile._specialize(kernel, request)
    for name in ("x_desc", "w_desc"):
        descriptor = launch.args[name]
        assert signature[name] == mangle_type(descriptor)


def test_tuning_keys_and_space(tied_timing):
    """The forward and the input gradient on the TMA kernel are tuned under its kind, by the keys
    ``tune --dry-run`` lists; only tiles whose reduction block divides C/groups are timed."""
    if not tma.has_tma(torch.device(DEVICE)):
        pytest.skip(f"{DEVICE} has no tensor-memory accelerator: the pointer kernel runs")
    problem = ConvProblem((2, 16, 4, 8), (16, 16, 3, 3), (1, 1), (1, 1), (1, 1), 1, torch.float32, True)
    x, w = (t.requires_grad_() for t in problem.tensors(DEVICE))
    with select.autotuning("exhaustive") as records:
        y = triton_conv.conv2d(x, w, None, problem.stride, problem.padding, problem.dilation, problem.groups)
        y.backward(torch.randn_like(y))
    keys = problem_keys(problem, backward=True)
    assert list(keys) == ["forward_tma", "forward_tma (input_grad)", "weight_grad"]
    assert {record.key for record in records} == set(keys.values())
    spec = conv_spec(x, w, None, 1, 1, 1, 1, ndim=2)
    space = select.search_space(tma.FORWARD_TMA, spec, torch.float32, "ieee", SMALL_TILE, exhaustive=True)
    assert all(16 % tile.block_k == 0 for tile in space)


@pytest.mark.compile
def test_tuning_space_compiles_for_sm90(gpu_tiles):
    """Every tile exhaustive tuning would time on suite shape 2 (bf16, channels-last): wgmma, no
    spills, within shared memory."""
    x = torch.empty(128, 64, 56, 56, dtype=torch.bfloat16, device="meta").to(memory_format=torch.channels_last)
    w = torch.empty(64, 64, 3, 3, dtype=torch.bfloat16, device="meta")
    spec = conv_spec(x, w, None, stride=1, padding=1, dilation=1, groups=1, ndim=2)
    y = torch.empty(spec.out_shape, dtype=x.dtype, device="meta", memory_format=torch.channels_last)
    heuristic = tma.tma_forward_config(spec, x.dtype, "ieee")
    space = select.search_space(tma.FORWARD_TMA, spec, x.dtype, "ieee", heuristic, exhaustive=True)
    assert len(space) >= 3
    for tile in space:
        info = compile_launch(tma.FORWARD_TMA.plan(spec, x, w, None, y, tile), 90)
        assert info.uses_wgmma and info.spill_bytes == 0, (tile, info)
        assert info.shared_bytes <= gpu_compile.SHARED_MEMORY_LIMIT[90], (tile, info)
