"""What only a CUDA GPU can check: bfloat16 on the whole table, TF32, 64-bit offsets on a real
tensor past 2^31 elements, the tuning cache across processes, ``torch.compile`` with inductor,
CUDA-graph capture of a converted model's training step, 8-warp tiles, and the newer paths at
suite sizes (band kernels, the TMA input gradient, the tap-major filter, band tuning, bundles
of groups).

Without CUDA (or under Triton's interpreter, which never compiles anything) every test here is
collected and skipped. ``triton-conv gpu-check`` runs them.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import triton_conv
from triton_conv.kernels import INTERPRETER
from triton_conv.kernels.implicit_gemm_forward import plan_forward
from triton_conv.kernels.implicit_gemm_input_grad import plan_input_grad
from triton_conv.kernels.implicit_gemm_weight_grad import implicit_gemm_weight_grad
from triton_conv.spec import as_3d, conv_spec, needs_int64, output_memory_format
from triton_conv.testing import relative_error, tolerance
from triton_conv.tuning import cache, configs, select
from triton_conv.tuning.configs import IMPLICIT_GEMM_CONFIGS, KernelConfig, fits

from .cases import CASES, named_cases, params
from .checks import check_backward, check_forward
from .reference import ConvCase, assert_close, make_inputs, reference_forward

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        INTERPRETER or not torch.cuda.is_available(),
        reason="needs a CUDA GPU and compiled kernels (TRITON_INTERPRET unset)",
    ),
]

REPO = Path(__file__).resolve().parents[1]
BF16 = torch.bfloat16

# ---------------------------------------------------------------- bfloat16 on the whole table


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("case", params(CASES))
def test_bfloat16_forward_table(case, layout):
    check_forward(case, BF16, layout)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("case", params(CASES))
def test_bfloat16_gradients_table(case, layout):
    check_backward(case, BF16, layout)


# ---------------------------------------------------------------- TF32

# A GEMM-path convolution (one group) with a reduction long enough for TF32 rounding to show.
TF32_CASE = ConvCase(2, 2, 32, 48, (10, 9), (3, 3), padding=1, name="tf32_gemm_2d")


@pytest.fixture
def precision_flags():
    """Restores torch's global TF32 switches, whatever the test sets them to."""
    saved = (torch.get_float32_matmul_precision(), torch.backends.cuda.matmul.allow_tf32)
    saved_cudnn = torch.backends.cudnn.allow_tf32
    yield
    torch.set_float32_matmul_precision(saved[0])
    torch.backends.cuda.matmul.allow_tf32 = saved[1]
    torch.backends.cudnn.allow_tf32 = saved_cudnn


def test_tf32_follows_the_cudnn_convolution_flag(precision_flags):
    """TF32 exactly when ``cudnn.allow_tf32`` is set, whatever the matmul precision says; within
    TF32's bound when on, within IEEE float32's when off (forward, input and weight gradients)."""
    case = TF32_CASE
    x, w, b = make_inputs(case, torch.float32, "channels_last", requires_grad=True)
    g = torch.randn(reference_forward(case, x, w, b).shape, device=x.device)  # float32: exact in float64 too
    leaves64 = [t.detach().double().requires_grad_() for t in (x, w)]
    y64 = reference_forward(case, *leaves64, b.detach().double())
    expected = (y64, *torch.autograd.grad(y64, leaves64, g.double()))
    pixels = g[0, 0].numel() * g.shape[0]
    reductions = (case.reduction, case.out_channels * math.prod(case.kernel), pixels)

    results = {}
    for allow in (True, False):
        torch.backends.cudnn.allow_tf32 = allow
        torch.set_float32_matmul_precision("highest" if allow else "high")  # the other way round
        y = triton_conv.conv2d(x, w, b, **case.kwargs())
        results[allow] = (y, *torch.autograd.grad(y, [x, w], g))

    for i, (name, reduction) in enumerate(zip(("forward", "input grad", "weight grad"), reductions)):
        tf32, ieee, want = results[True][i], results[False][i], expected[i]
        assert relative_error(ieee, want) <= tolerance(torch.float32, reduction), f"{name} without TF32"
        assert relative_error(tf32, want) <= tolerance("tf32", reduction), f"{name} with TF32"
        # TF32 keeps 10 of float32's 23 mantissa bits: on random data some output must differ.
        assert not torch.equal(tf32, ieee), f"{name}: cudnn.allow_tf32 made no difference"


# ---------------------------------------------------------------- 64-bit offsets

# 8 x 16384 x 16400 elements is just over 2^31: 4.3 GB in bfloat16 per tensor.
INT64_ROWS, INT64_WIDTH = 16384, 16400


def _require_free_memory(tensors: int) -> None:
    need = tensors * 8 * INT64_ROWS * INT64_WIDTH * 2
    free, _ = torch.cuda.mem_get_info()
    if free < need:
        pytest.skip(f"needs {need / 2**30:.0f} GiB of free GPU memory, {free / 2**30:.0f} GiB free")


def test_int64_offsets_gemm_forward_and_gradients():
    """A 1x1 convolution of a bfloat16 tensor past 2^31 elements: the first and last rows of the
    output and input gradient against torch, and the whole weight gradient against float64."""
    _require_free_memory(5)
    channels = 8
    x = torch.randn(1, channels, INT64_ROWS, INT64_WIDTH, device="cuda", dtype=BF16)
    assert x.numel() > 2**31 and needs_int64(x)
    w = (torch.randn(channels, channels, 1, 1, device="cuda", dtype=torch.float64) / math.sqrt(channels)).to(BF16)
    x.requires_grad_()
    w.requires_grad_()
    y = triton_conv.conv2d(x, w)
    dy = torch.randn(y.shape, device="cuda", dtype=BF16)  # contiguous, so that it views as (channels, pixels)
    dx, dw = torch.autograd.grad(y, [x, w], dy)
    x, w = x.detach(), w.detach()
    for rows in (slice(0, 4), slice(-4, None)):
        want = F.conv2d(x[:, :, rows].double(), w.double())
        assert_close(y[:, :, rows], want, BF16, channels, f"forward rows {rows}")
        want = F.conv_transpose2d(dy[:, :, rows].double(), w.double())
        assert_close(dx[:, :, rows], want, BF16, channels, f"input gradient rows {rows}")
    del y, dx
    # dw[k, c] = sum over pixels of dy[k, p] x[c, p], in float64 a chunk of pixels at a time.
    x2, dy2 = x.view(channels, -1), dy.view(channels, -1)
    chunk = 2**24
    want = sum(dy2[:, i : i + chunk].double() @ x2[:, i : i + chunk].double().T for i in range(0, x2.shape[1], chunk))
    assert_close(dw, want.view_as(dw), BF16, x2.shape[1], "weight gradient")


def test_int64_offsets_direct_forward(monkeypatch):
    """A depthwise 3x3 convolution of a bfloat16 tensor past 2^31 elements on the direct kernel
    (the band kernels, which this layout would take, switched off): the first and last output
    rows against torch."""
    from triton_conv.kernels import dispatch

    monkeypatch.setattr(dispatch, "BAND_KERNELS_ENABLED", False)
    _require_free_memory(2)
    channels = 16
    x = torch.randn(1, channels, INT64_ROWS, INT64_WIDTH // 2, device="cuda", dtype=BF16)
    assert x.numel() > 2**31 and needs_int64(x)
    w = (torch.randn(channels, 1, 3, 3, device="cuda", dtype=torch.float64) / 3).to(BF16)
    y = triton_conv.conv2d(x, w, padding=1, groups=channels)
    # Five input rows give four correct output rows at each edge (the fifth lacks its neighbour).
    first = F.conv2d(x[:, :, :5].double(), w.double(), padding=1, groups=channels)[:, :, :4]
    last = F.conv2d(x[:, :, -5:].double(), w.double(), padding=1, groups=channels)[:, :, 1:]
    assert_close(y[:, :, :4], first, BF16, 9, "forward, first rows")
    assert_close(y[:, :, -4:], last, BF16, 9, "forward, last rows")


# ---------------------------------------------------------------- the tuning cache across processes


def tuned_conv() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A float16 channels-last conv on CUDA with fixed inputs (also run by the second process)."""
    torch.manual_seed(0)
    x = torch.randn(4, 32, 20, 20, device="cuda", dtype=torch.float16).to(memory_format=torch.channels_last)
    w = (torch.randn(48, 32, 3, 3, device="cuda", dtype=torch.float16) / 17).to(memory_format=torch.channels_last)
    y = triton_conv.conv2d(x, w, padding=1)
    torch.cuda.synchronize()
    return x, w, y


def test_autotuning_writes_the_cache_and_a_second_process_reuses_it(tmp_path, monkeypatch):
    monkeypatch.setenv(cache.CACHE_DIR_ENV, str(tmp_path))
    with select.autotuning("first_use") as records:
        x, w, y = tuned_conv()
    [record] = records
    assert record.timed >= 2, record
    assert_close(y, F.conv2d(x.double(), w.double(), padding=1), torch.float16, 32 * 9, "tuned forward")
    [cache_file] = tmp_path.glob("*.json")
    assert record.key in json.loads(cache_file.read_text())["entries"]
    torch.save(y.cpu(), tmp_path / "y.pt")

    script = textwrap.dedent(f"""
        import torch
        from tests.test_gpu import tuned_conv
        from triton_conv.tuning import select

        def refuse(run):
            raise AssertionError("the second process timed a launch")

        select.time_ms = refuse
        with select.autotuning() as records:
            x, w, y = tuned_conv()
        assert records == [], records
        assert torch.equal(y.cpu(), torch.load({str(tmp_path / "y.pt")!r})), "not the first process's config"
    """)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.update({cache.CACHE_DIR_ENV: str(tmp_path), select.AUTOTUNE_ENV: "first_use"})
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-4000:]


# ---------------------------------------------------------------- torch.compile and CUDA graphs


def small_cnn() -> nn.Module:
    """A stem, BatchNorm, a depthwise conv (direct kernels), a 1x1, a strided conv and a head."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1, groups=32),
        nn.Conv2d(32, 64, 1),
        nn.SiLU(),
        nn.Conv2d(64, 64, 3, stride=2, padding=1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, 10),
    )


def _converted_cnn_and_batch() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    model = triton_conv.convert_model(small_cnn()).cuda().to(memory_format=torch.channels_last)
    x = torch.randn(8, 3, 32, 32, device="cuda").to(memory_format=torch.channels_last)
    return model, x, torch.randint(0, 10, (8,), device="cuda")


def _loss_and_grads(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> list[torch.Tensor]:
    loss = F.cross_entropy(model(x), target)
    return [loss.detach(), *torch.autograd.grad(loss, list(model.parameters()))]


def test_torch_compile_inductor_keeps_the_ops_and_matches_eager():
    from torch._inductor.utils import run_and_get_code

    torch._dynamo.reset()
    model, x, target = _converted_cnn_and_batch()
    eager = _loss_and_grads(model, x, target)
    compiled = torch.compile(model, backend="inductor", fullgraph=True)
    _, code = run_and_get_code(lambda: compiled(x))
    assert any("triton_conv.conv_forward" in c for c in code), "inductor replaced the triton_conv ops"
    for got, want in zip(_loss_and_grads(compiled, x, target), eager):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_cuda_graph_captures_a_training_step():
    """Forward and backward of a converted model, captured after warm-up and replayed on new data,
    equal an eager step; no call on the launch path waits for the GPU."""
    model, static_x, target = _converted_cnn_and_batch()
    params = list(model.parameters())

    def step() -> torch.Tensor:
        for p in params:
            p.grad = None  # gradients allocated inside the capture, from the graph's pool
        loss = F.cross_entropy(model(static_x), target)
        loss.backward()
        return loss

    # Warm-up on a side stream compiles every kernel, as torch.cuda.graphs asks.
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.set_sync_debug_mode("error")  # any synchronising call now raises
    try:
        old_loss = step().detach().clone()
    finally:
        torch.cuda.set_sync_debug_mode("default")

    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_loss = step()
    static_x.copy_(torch.randn_like(static_x))
    graph.replay()
    torch.cuda.synchronize()
    replayed = [static_loss.detach().clone(), *(p.grad.clone() for p in params)]
    assert not torch.equal(replayed[0], old_loss), "the replay did not see the new input"
    eager = [step().detach(), *(p.grad for p in params)]
    for got, want in zip(replayed, eager):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------- 8-warp tiles

# Several taps and channel blocks, stride and dilation, a 1x1 (the pointwise path), 1-D and 3-D.
EIGHT_WARP_CASES = [
    ConvCase(2, 2, 40, 72, (11, 10), (3, 3), padding=1, name="eight_warp_2d"),
    ConvCase(2, 1, 24, 40, (13, 12), (3, 3), stride=2, padding=2, dilation=2, name="eight_warp_strided_dilated_2d"),
    ConvCase(2, 2, 64, 80, (9, 9), (1, 1), name="eight_warp_pointwise_2d"),
    ConvCase(1, 2, 48, 64, (40,), (5,), stride=2, padding=2, name="eight_warp_1d"),
    ConvCase(3, 1, 20, 36, (5, 6, 7), (3, 3, 3), padding=1, name="eight_warp_3d"),
]
# Two tiles every dtype fits, and the shipped 8-warp tiles where they fit the dtype.
EIGHT_WARP_BASE = [KernelConfig(64, 64, 32, 8, 2), KernelConfig(128, 32, 16, 8, 3)]
EIGHT_WARP_DTYPES = [torch.bfloat16, torch.float16, torch.float32, torch.float64]


def eight_warp_tiles(kind: str, dtype: torch.dtype) -> list[KernelConfig]:
    shipped = [c for c in IMPLICIT_GEMM_CONFIGS[kind] if c.num_warps == 8 and fits(c, dtype, "ieee")]
    return list(dict.fromkeys([*EIGHT_WARP_BASE, *shipped]))


@pytest.mark.parametrize("dtype", EIGHT_WARP_DTYPES, ids=str)
@pytest.mark.parametrize("case", params(EIGHT_WARP_CASES))
@pytest.mark.parametrize("kind", ["forward", "input_grad", "weight_grad"])
def test_eight_warp_gemm_tiles(kind, case, dtype):
    """Each GEMM kernel run with explicit 8-warp tiles (a flat-loop miscompile with 8 warps is
    known in other Triton convolutions) against torch's float64 result."""
    x, w, _ = make_inputs(case, dtype, "channels_last")
    spec = conv_spec(x, w, None, **case.kwargs(), ndim=case.ndim)
    dy = torch.randn(spec.out_shape, dtype=torch.float64).to(dtype).to(x.device)
    x64, w64 = x.double().requires_grad_(), w.double().requires_grad_()
    y64 = reference_forward(case, x64, w64, None)
    dx64, dw64 = torch.autograd.grad(y64, [x64, w64], dy.double())
    for config in eight_warp_tiles(kind, dtype):
        what = f"{kind} {case.id} {dtype} {config}"
        if kind == "forward":
            y = torch.empty(spec.out_shape, dtype=dtype, device=x.device, memory_format=output_memory_format(x, w))
            plan_forward(x, w, None, spec, y, config)()
            assert_close(y, y64.detach(), dtype, case.reduction, what)
        elif kind == "input_grad":
            dx = torch.empty_like(x)
            plan_input_grad(dy, w, spec, dx, config)()
            assert_close(dx, dx64, dtype, spec.out_channels_per_group * spec.taps, what)
        else:
            dw = torch.empty(w.shape, dtype=dtype, device=w.device)
            implicit_gemm_weight_grad(dy, x, spec, dw, None, config)
            assert_close(dw, dw64, dtype, spec.output_pixels, what)


# Depthwise and few-channel grouped cases of the table: the direct kernels.
DIRECT_CASES = named_cases(
    "same_even_kernel_grouped_1d",
    "depthwise_same_1d",
    "depthwise_multiplier_nobias_1d",
    "same_grouped_2d",
    "depthwise_strided_2d",
    "grouped_dilated_3d",
)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
@pytest.mark.parametrize("case", params(DIRECT_CASES))
def test_eight_warp_direct_kernels(case, dtype, monkeypatch):
    monkeypatch.setattr(configs, "DIRECT_NUM_WARPS", 8)
    check_forward(case, dtype, "channels_last")
    check_backward(case, dtype, "channels_last")


# ---------------------------------------------------------------- band kernels at suite sizes

# Suite shapes 15, 20 and 32 cut in batch: several programs per channel, segments of 64 and 16,
# rows of 14 read from a widened copy. Forward and the three gradients against float64 torch.
BAND_CASES = [
    ConvCase(2, 4, 96, 96, (56, 56), (7, 7), padding=3, groups=96, name="convnext_dw7"),
    ConvCase(1, 4, 256, 256, (1000,), (31,), padding=15, groups=256, name="conformer_dw31"),
    ConvCase(2, 2, 64, 64, (14, 14), (31, 31), padding=15, groups=64, name="replk_dw31"),
]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("case", BAND_CASES, ids=lambda c: c.id)
def test_band_kernels_at_suite_sizes(case, dtype):
    check_forward(case, dtype, "contiguous")
    check_backward(case, dtype, "contiguous")


# ---------------------------------------------------------------- TMA input gradient, tap-major filter, band tuning

# Suite shapes 2 and 24 cut in batch: stride 1, padded, 64 channels, so that the forward and the
# input gradient both run the TMA kernel (in either layout, through the channels-last copy).
TMA_CASES = [
    ConvCase(2, 4, 64, 64, (56, 56), (3, 3), padding=1, name="r50_c2_3x3"),
    ConvCase(3, 1, 64, 128, (8, 28, 28), (3, 3, 3), padding=1, name="c3d_conv2a"),
]


@pytest.mark.parametrize("layout", ["channels_last", "contiguous"])
@pytest.mark.parametrize("case", TMA_CASES, ids=lambda c: c.id)
def test_tma_forward_and_input_grad_at_suite_sizes(case, layout):
    """On Hopper both passes run the TMA kernel here; elsewhere the pointer kernels."""
    from triton_conv.kernels import dispatch

    x, w, _ = make_inputs(case, BF16, layout)
    spec = conv_spec(x, w, None, **case.kwargs(), ndim=case.ndim)
    dy = torch.empty(spec.out_shape, dtype=BF16, device=x.device, memory_format=output_memory_format(x, w))
    on_hopper = torch.cuda.get_device_capability(x.device)[0] >= 9
    assert dispatch.tma_forward_applies(dispatch.gemm_operand(as_3d(x)), spec) is on_hopper
    assert dispatch.tma_input_grad_applies(dispatch.gemm_operand(as_3d(dy)), spec) is on_hopper
    check_forward(case, BF16, layout)
    check_backward(case, BF16, layout)


@pytest.mark.parametrize(
    "case",
    [
        ConvCase(2, 8, 240, 240, (28, 28), (5, 5), padding=2, groups=240, name="effnet_dw5"),
        ConvCase(2, 8, 128, 128, (56, 56), (3, 3), padding=1, groups=32, name="resnext_g32"),
    ],
    ids=lambda c: c.name,
)
def test_tap_major_filter_at_suite_size(case, monkeypatch):
    """Suite shapes 14 and 10 cut in batch, channels-last, with the filter copy forced on (and
    shape 10's bundles of groups off: the direct kernels run)."""
    from triton_conv.kernels import direct, dispatch

    monkeypatch.setattr(direct, "TAP_MAJOR_FILTER_MIN_FMAS", 0)
    monkeypatch.setattr(dispatch, "GROUP_BUNDLES_ENABLED", False)
    check_forward(case, BF16, "channels_last")
    check_backward(case, BF16, "channels_last", cotangent="channels_last")


def test_band_forward_tunes_and_caches(tmp_path, monkeypatch):
    """First use times the band forward's tiles (suite shape 15 cut in batch) and caches the
    winner; the result matches torch whichever tile won."""
    monkeypatch.setenv(cache.CACHE_DIR_ENV, str(tmp_path))
    case = ConvCase(2, 2, 96, 96, (56, 56), (7, 7), padding=3, groups=96, name="convnext_dw7")
    x, w, b = make_inputs(case, BF16, "contiguous")
    with select.autotuning("first_use") as records:
        y = triton_conv.conv2d(x, w, b, padding=3, groups=96)
    assert [record.key.split(":")[0] for record in records] == ["banded_forward"]
    assert records[0].timed >= 2
    assert_close(y, reference_forward(case, x, w, b), BF16, case.reduction, "tuned band forward")


def test_band_weight_grad_tunes_and_caches(tmp_path, monkeypatch):
    """First use times the band weight gradient's tiles with their split counts (suite shape 15
    cut in batch) and caches the winner; dw and db match torch whichever tile won."""
    monkeypatch.setenv(cache.CACHE_DIR_ENV, str(tmp_path))
    case = ConvCase(2, 2, 96, 96, (56, 56), (7, 7), padding=3, groups=96, name="convnext_dw7")
    x, w, b = make_inputs(case, BF16, "contiguous")
    w.requires_grad_(True)
    b.requires_grad_(True)
    y = triton_conv.conv2d(x, w, b, padding=3, groups=96)
    g = torch.randn_like(y)
    with select.autotuning("first_use") as records:
        dw, db = torch.autograd.grad(y, (w, b), g)
    assert [record.key.split(":")[0] for record in records] == ["banded_weight_grad"]
    assert records[0].timed >= 2
    pixels = 2 * 56 * 56
    expected_dw = torch.nn.grad.conv2d_weight(x.double(), w.shape, g.double(), padding=3, groups=96)
    assert_close(dw, expected_dw.to(BF16), BF16, pixels, "tuned band weight gradient")
    assert_close(db, g.double().sum((0, 2, 3)).to(BF16), BF16, pixels, "tuned band bias gradient")


def test_direct_kernels_tune_and_cache(tmp_path, monkeypatch):
    """First use times the direct forward's and input gradient's tiles (suite shape 10 cut in
    batch, channels-last, its bundles of groups off) and caches the winners; the results match
    torch whichever tiles won."""
    from triton_conv.kernels import dispatch

    monkeypatch.setattr(dispatch, "GROUP_BUNDLES_ENABLED", False)
    monkeypatch.setenv(cache.CACHE_DIR_ENV, str(tmp_path))
    case = ConvCase(2, 4, 128, 128, (56, 56), (3, 3), padding=1, groups=32, name="resnext_g32")
    x, w, b = make_inputs(case, BF16, "channels_last")
    x.requires_grad_(True)
    with select.autotuning("first_use") as records:
        y = triton_conv.conv2d(x, w, b, padding=1, groups=32)
        g = torch.randn_like(y)
        (dx,) = torch.autograd.grad(y, x, g)
    assert [record.key.split(":")[0] for record in records] == ["direct_forward", "direct_input_grad"]
    assert all(record.timed >= 2 for record in records)
    assert_close(y, reference_forward(case, x, w, b), BF16, case.reduction, "tuned direct forward")
    expected_dx = torch.nn.grad.conv2d_input(x.shape, w.double(), g.double(), padding=1, groups=32)
    assert_close(dx, expected_dx.to(BF16), BF16, 4 * 9, "tuned direct input gradient")


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_bundled_groups_at_suite_size(layout):
    """Suite shape 10 cut in batch: its three passes on the GEMMs over bundles of 16 groups
    against torch; a NaN and infinities in x make NaN and infinities of the output exactly where
    torch's are (the gated direct kernel recomputes it)."""
    case = ConvCase(2, 4, 128, 128, (56, 56), (3, 3), padding=1, groups=32, name="resnext_g32")
    check_forward(case, BF16, layout)
    check_backward(case, BF16, layout)
    x, w, b = make_inputs(case, BF16, layout)
    x[0, 5, 10, 10] = math.inf
    x[1, 70, 0, 0] = math.nan
    x[3, 127, 55, 30] = -math.inf
    y = triton_conv.conv2d(x, w, b, padding=1, groups=32)
    expected = reference_forward(case, x, w, b)
    assert torch.equal(y.isnan(), expected.isnan())
    assert torch.equal(y.isposinf(), expected.isposinf())
    assert torch.equal(y.isneginf(), expected.isneginf())
    finite = expected.isfinite()
    assert_close(y[finite], expected[finite].to(BF16), BF16, case.reduction, "bundled forward, finite outputs")
