"""Depthwise convolutions of channels-last tensors with filters of 25 taps or more, in 16-bit
dtypes, on the GEMM over output patches (``kernels/patches.py``): the forward and the input
gradient, each followed by the direct kernel gated on its non-finite flag."""

import pytest
import torch

import triton_conv
from triton_conv.kernels import dispatch
from triton_conv.kernels.common import recording_launches
from triton_conv.kernels.patches import fit_patch_rows, patch_forward, patch_weight_grad, patch_weight_grad_tile
from triton_conv.spec import conv_spec
from triton_conv.tune import ConvProblem, problem_keys
from triton_conv.tuning import select
from triton_conv.tuning.configs import MIN_DOT, PATCH_TILES, PATCH_WEIGHT_GRAD_TILES, KernelConfig, planning_gpu_tiles

from .checks import (
    assert_non_finite_like,
    check_backward,
    check_forward,
    check_gated_recomputation,
    check_transposed,
    poison,
)
from .reference import ConvCase, TCase, assert_close, make_inputs, reference_forward

pytestmark = [
    pytest.mark.backward,
    # NumPy, running the interpreted kernels, warns about the NaN the non-finite tests make.
    pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning"),
]


@pytest.fixture(autouse=True)
def no_plane_kernel(monkeypatch):
    """These tests run the patch kernel over small geometries (quick in the interpreter), some of
    whose planes hold at most 64 pixels, which the plane kernel (tried first) would take: it is
    switched off here."""
    monkeypatch.setattr(dispatch, "PLANE_MAX_PIXELS", 0)


def _spec(case: ConvCase):
    x, w, b = make_inputs(case, torch.float64)
    return conv_spec(x, w, b, case.stride, case.padding, case.dilation, case.groups, case.ndim)


def _patch_launches(launches) -> int:
    """How many launches run the patch kernel; each is followed by the direct kernel gated on its flag."""
    at = [i for i, launch in enumerate(launches) if launch.kernel.__name__ == "patch_forward_kernel"]
    for i in at:
        assert launches[i + 1].constexprs.get("GATED"), launches
        assert launches[i + 1].args["flag_ptr"] is launches[i].args["flag_ptr"]
    return len(at)


def _patch_weight_grad_launches(launches) -> list[str]:
    """The kernels of a weight gradient's launches, the gated ones marked."""
    return [launch.kernel.__name__ + (" (gated)" if launch.constexprs.get("GATED") else "") for launch in launches]


def _channels_last(t: torch.Tensor) -> torch.Tensor:
    """``t``'s values with channels innermost in memory, any number of dimensions."""
    return t.movedim(1, -1).contiguous().movedim(-1, 1)


PATCHED = [
    # ConvNeXt's 7x7, "same" padding; 12 channels: a partial channel block.
    ConvCase(2, 2, 12, 12, (9, 11), (7, 7), padding=3, groups=12),
    # 5x5 unpadded, odd sizes, no bias.
    ConvCase(2, 1, 8, 8, (7, 10), (5, 5), groups=8, bias=False),
    # Dilated, uneven padding, a 5x7 filter.
    ConvCase(2, 2, 16, 16, (8, 9), (5, 7), padding=(1, 4), dilation=(2, 1), groups=16),
    # 3-D, 3x3x3 (27 taps).
    ConvCase(3, 1, 8, 8, (3, 5, 6), (3, 3, 3), padding=1, groups=8),
    # A 2x13 filter (26 taps) over rows narrower than the band kernels take in channels-last.
    ConvCase(2, 1, 8, 8, (2, 20), (2, 13), padding=(1, 6), groups=8),
    # 1-D, 25 taps over outputs too short for the band kernels (6): patches of 16 along W.
    ConvCase(1, 2, 8, 8, (18,), (25,), padding=6, groups=8),
    # 6 channels (a partial channel block under the interpreter's tile too), a 6x5 filter: input
    # patches of 9 rows, read 2 rows a step, so the last step's second row is past the patch.
    ConvCase(2, 2, 6, 6, (7, 9), (6, 5), padding=2, groups=6),
    # 4x4 patches tile the 16x32 output, and its 128 (image, patch) rows fill whole tiles, the
    # interpreter's 16 rows and a GPU's 128: the stores take no pixel mask (EVEN_PATCHES).
    ConvCase(2, 4, 4, 4, (16, 32), (5, 5), padding=2, groups=4),
]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("case", PATCHED, ids=lambda c: c.id)
def test_patch_kernel(case, dtype):
    """Every pass runs the patch kernel and then the direct kernel gated on its flag (the weight
    gradient's taps gathered from its partials first, which sets the flag; the direct partials
    summed by the gated split sums). The output and every gradient
    match torch's."""
    spec = _spec(case)
    x, w, b = make_inputs(case, dtype, "channels_last")
    y = _channels_last(torch.empty(spec.out_shape, dtype=dtype))
    with recording_launches() as launches:
        dispatch.forward(x, w, b, spec, y)
    assert _patch_launches(launches) == 1
    with recording_launches() as launches:
        dispatch.input_grad(y, w, spec, torch.empty_like(x))
    assert _patch_launches(launches) == 1
    with recording_launches() as launches:
        dispatch.weight_grad(y, x, spec, torch.empty_like(w), torch.empty_like(b) if b is not None else None)
    sums = ["split_k_sum_kernel (gated)"] * (1 + (b is not None))
    assert _patch_weight_grad_launches(launches) == [
        "patch_weight_grad_kernel",
        "patch_taps_kernel",
        "direct_weight_grad_kernel (gated)",
        *sums,
    ]
    check_forward(case, dtype, "channels_last")
    # The weight gradient reads dy channels-last, a copy of a default-layout one.
    check_backward(case, dtype, "channels_last", cotangent="channels_last" if dtype == torch.bfloat16 else "random")


@pytest.mark.parametrize("case", PATCHED, ids=lambda c: c.id)
def test_even_patches(case):
    """The stores drop their pixel mask exactly where the patches tile the output and the rows fill
    whole tiles (the last geometry alone, under the interpreter's tile and a GPU's)."""
    spec = _spec(case)
    x, w, b = make_inputs(case, torch.bfloat16, "channels_last")
    with recording_launches() as launches:
        dispatch.forward(x, w, b, spec, _channels_last(torch.empty(spec.out_shape, dtype=torch.bfloat16)))
    (launch,) = [launch for launch in launches if launch.kernel.__name__ == "patch_forward_kernel"]
    assert launch.constexprs["EVEN_PATCHES"] == (case is PATCHED[-1])


@pytest.mark.parametrize("case", [PATCHED[0], PATCHED[3]], ids=lambda c: c.id)
def test_patch_kernel_keeps_non_finite_values_where_torch_has_them(case):
    """A NaN, +inf and -inf in the input (forward) or the output gradient (input gradient) make
    NaN and infinities exactly where torch's are: the patch kernel flags its tiles (the band's
    zeros times them are NaN) and the gated direct kernel computes the output again. On finite
    data the flag stays clear."""
    x, w, b = make_inputs(case, torch.bfloat16, "channels_last")
    spec = _spec(case)
    dy = _channels_last(torch.randn(spec.out_shape, dtype=torch.float64).to(torch.bfloat16))

    check_gated_recomputation(case, spec, x, w, b, dy)


@pytest.mark.parametrize("case", [PATCHED[0], PATCHED[1], PATCHED[3]], ids=lambda c: c.id)
def test_patch_weight_grad_keeps_non_finite_values_where_torch_has_them(case, monkeypatch):
    """The weight gradient's flag is clear on finite data (its result stands); with a NaN, +inf
    and -inf in the input and the output gradient it is set, and the gated direct kernel gives
    torch's NaN and infinities: the patch kernel's products of dy's zeros past the output's edge
    with them would make NaN of taps torch leaves finite (the unpadded case)."""
    flags = []

    def recorded(*args):
        flags.append(patch_weight_grad(*args))
        return flags[-1]

    monkeypatch.setattr(dispatch, "patch_weight_grad", recorded)
    x, w, b = make_inputs(case, torch.bfloat16, "channels_last")
    spec = _spec(case)
    dy = _channels_last(torch.randn(spec.out_shape, dtype=torch.float64).to(torch.bfloat16))
    for poisoned in (False, True):
        if poisoned:
            poison(x)
            poison(dy)
        dw = torch.empty_like(w)
        db = torch.empty_like(b) if b is not None else None
        dispatch.weight_grad(dy, x, spec, dw, db)
        assert int(flags[-1]) == poisoned
        weight = w.double().requires_grad_()
        bias = b.double().requires_grad_() if b is not None else None
        y = reference_forward(case, x.double(), weight, bias)
        expected = torch.autograd.grad(y, (weight, bias) if b is not None else (weight,), dy.double())
        if poisoned:
            assert_non_finite_like(dw, expected[0], "weight gradient")
        else:
            assert_close(dw, expected[0], torch.bfloat16, spec.output_pixels, "weight gradient")
        if b is not None:
            torch.testing.assert_close(db.isfinite(), expected[1].isfinite())


def test_patch_weight_grad_splits(monkeypatch):
    """The weight gradient with an image's patches over two programs and the images split in two
    (a GPU's occupancy rule asks for splits; the interpreter's never does): every split's partials
    of G and db summed by the taps kernel, the gradients as torch's."""
    from triton_conv.kernels import patches

    monkeypatch.setattr(patches, "split_k_for", lambda programs, reduction, block: 2)
    case = ConvCase(2, 3, 8, 8, (20, 20), (7, 7), padding=3, groups=8)
    x, w, b = make_inputs(case, torch.bfloat16, "channels_last")
    spec = _spec(case)
    cfg = patches.PatchConfig.of(patches.patch_weight_grad_tile(spec), patches.patch_shape(spec))
    patch_blocks = -(-patches.patches_per_image(spec, cfg.patch) // cfg.block_m)
    assert patch_blocks == 2 and patches.patch_weight_grad_splits(spec, cfg) == 2 * patch_blocks
    dy = _channels_last(torch.randn(spec.out_shape, dtype=torch.float64).to(torch.bfloat16))
    dw, db = torch.empty_like(w), torch.empty_like(b)
    flag = patch_weight_grad(dy, x, spec, dw, db)
    assert int(flag) == 0
    weight, bias = w.double().requires_grad_(), b.double().requires_grad_()
    expected = torch.autograd.grad(reference_forward(case, x.double(), weight, bias), (weight, bias), dy.double())
    assert_close(dw, expected[0], torch.bfloat16, spec.output_pixels, "weight gradient")
    assert_close(db, expected[1], torch.bfloat16, spec.output_pixels, "bias gradient")


@pytest.mark.parametrize("image_splits", [1, 2])
def test_patch_weight_grad_tail_block_takes_several_images(image_splits, monkeypatch):
    """An image's 20 patches in blocks of 16: the last block takes the 4 left over from 4 images
    at once, and walks 11 images (or two splits of 6) in steps of 4, its last step past the
    split's end in part. Every (image, patch) counted once: the gradients as torch's."""
    from triton_conv.kernels import patches

    monkeypatch.setattr(patches, "split_k_for", lambda programs, reduction, block: image_splits)
    case = ConvCase(2, 11, 8, 8, (20, 16), (5, 5), padding=2, groups=8)
    x, w, b = make_inputs(case, torch.bfloat16, "channels_last")
    spec = _spec(case)
    dy = _channels_last(torch.randn(spec.out_shape, dtype=torch.float64).to(torch.bfloat16))
    dw, db = torch.empty_like(w), torch.empty_like(b)
    with recording_launches() as launches:
        patch_weight_grad(dy, x, spec, dw, db)
    args = launches[0].args
    assert (args["PATCH_BLOCKS"], args["TAIL_PATCHES"], launches[0].constexprs["BLOCK_M"]) == (2, 4, 16)
    assert launches[0].constexprs["PACKED_TAIL"]
    assert launches[0].grid[2] == 2 * image_splits
    assert int(patch_weight_grad(dy, x, spec, dw, db)) == 0
    weight, bias = w.double().requires_grad_(), b.double().requires_grad_()
    expected = torch.autograd.grad(reference_forward(case, x.double(), weight, bias), (weight, bias), dy.double())
    assert_close(dw, expected[0], torch.bfloat16, spec.output_pixels, "weight gradient")
    assert_close(db, expected[1], torch.bfloat16, spec.output_pixels, "bias gradient")


@pytest.mark.parametrize(
    "case, rows",
    [(case, 4 * MIN_DOT) for case in PATCHED] + [(case, 2 * MIN_DOT) for case in PATCHED[:2]],
    ids=lambda v: v.id if isinstance(v, ConvCase) else f"rows{v}",
)
def test_patch_weight_grad_deep_steps(case, rows):
    """The weight gradient with a GPU tile's steps of several input rows (or a chunk of 32 or 64
    columns) per program (``PATCH_WEIGHT_GRAD_TILES``; the interpreter's tile takes 16 rows): the
    band rows and the taps' gather follow the tile, the gradients as torch's."""
    x, w, b = make_inputs(case, torch.bfloat16, "channels_last")
    spec = _spec(case)
    dy = _channels_last(torch.randn(spec.out_shape, dtype=torch.float64).to(torch.bfloat16))
    dw, db = torch.empty_like(w), torch.empty_like(b) if b is not None else None
    flag = patch_weight_grad(dy, x, spec, dw, db, tile=fit_patch_rows(spec, KernelConfig(16, 4, rows, 4, 1)))
    assert int(flag) == 0
    weight = w.double().requires_grad_()
    bias = b.double().requires_grad_() if b is not None else None
    inputs = (weight, bias) if bias is not None else (weight,)
    expected = torch.autograd.grad(reference_forward(case, x.double(), weight, bias), inputs, dy.double())
    assert_close(dw, expected[0], torch.bfloat16, spec.output_pixels, "weight gradient")
    if bias is not None:
        assert_close(db, expected[1], torch.bfloat16, spec.output_pixels, "bias gradient")


# Dilated along W, where the weight gradient's sums along W take every second diagonal of G: 2-D,
# and 1-D with input rows of 64 columns (4 chunks of the interpreter's 16-column steps, 1 of 64).
DILATED_ALONG_W = [
    ConvCase(2, 2, 8, 8, (8, 13), (5, 7), padding=(2, 3), dilation=(1, 2), groups=8),
    ConvCase(1, 2, 8, 8, (60,), (25,), padding=12, dilation=2, groups=8),
]


@pytest.mark.parametrize("rows", [MIN_DOT, 4 * MIN_DOT], ids=lambda rows: f"rows{rows}")
@pytest.mark.parametrize("case", DILATED_ALONG_W, ids=lambda c: c.id)
def test_dilated_along_w(case, rows):
    """The forward, input gradient and weight gradient with the filter dilated along W run the
    patch kernels and match torch, the weight gradient with steps of 16 and 64 band rows."""
    x, w, b = make_inputs(case, torch.bfloat16, "channels_last")
    spec = _spec(case)
    assert dispatch.uses_patch_kernel(x, spec) and dispatch.uses_patch_weight_grad(x, spec)
    dy = _channels_last(torch.randn(spec.out_shape, dtype=torch.float64).to(torch.bfloat16))
    dw, db = torch.empty_like(w), torch.empty_like(b)
    flag = patch_weight_grad(dy, x, spec, dw, db, tile=fit_patch_rows(spec, KernelConfig(16, 4, rows, 4, 1)))
    assert int(flag) == 0
    weight, bias = w.double().requires_grad_(), b.double().requires_grad_()
    expected = torch.autograd.grad(reference_forward(case, x.double(), weight, bias), (weight, bias), dy.double())
    assert_close(dw, expected[0], torch.bfloat16, spec.output_pixels, "weight gradient")
    assert_close(db, expected[1], torch.bfloat16, spec.output_pixels, "bias gradient")
    if rows == MIN_DOT:
        check_forward(case, torch.bfloat16, "channels_last")
        check_backward(case, torch.bfloat16, "channels_last", cotangent="channels_last")


@pytest.mark.parametrize("ties_to_last", [False, True], ids=["halves_outer", "patches_outer"])
def test_both_tile_orders(ties_to_last, monkeypatch):
    """The pairs of pixels (``patch_step_operands``, ``patch_weight_grad_product``) rejoin in
    order whichever way the step's tile is laid out (each Triton version compiles one of them):
    the output and every gradient as torch's."""
    from triton_conv.kernels import patches

    monkeypatch.setattr(patches, "COALESCE_TIES_TO_LAST_DIMENSION", ties_to_last)
    for case in (PATCHED[0], PATCHED[3]):
        check_forward(case, torch.bfloat16, "channels_last")
        check_backward(case, torch.bfloat16, "channels_last", cotangent="channels_last")


def test_empty_batch():
    """No images: the output is empty and the gradients of the weight and bias are zeros, as torch's."""
    case = ConvCase(2, 0, 8, 8, (9, 9), (5, 5), padding=2, groups=8)
    x, w, b = make_inputs(case, torch.bfloat16, "channels_last", requires_grad=True)
    y = triton_conv.conv2d(x, w, b, padding=2, groups=8)
    assert y.shape == (0, 8, 9, 9)
    y.sum().backward()
    assert not w.grad.any() and not b.grad.any() and x.grad.shape == x.shape


def test_patch_kernel_fused_epilogue_and_transposed(monkeypatch):
    """The patch kernel carries the fused epilogue (bias, residual, activation) of the forward and
    of a transposed convolution (whose output is an input gradient), and its gradients."""
    calls = []

    def counted(*args, **kwargs):
        calls.append(kwargs.get("flip_filter", False))
        return patch_forward(*args, **kwargs)

    monkeypatch.setattr(dispatch, "patch_forward", counted)
    case = PATCHED[0]
    x, w, b = make_inputs(case, torch.bfloat16, "channels_last")
    residual = _channels_last(torch.randn(case.batch, case.out_channels, *case.size, dtype=torch.float64).bfloat16())
    y = triton_conv.conv2d(x, w, b, padding=3, groups=case.groups, activation="silu", residual=residual)
    expected = torch.nn.functional.silu(reference_forward(case, x, w, b) + residual.double())
    assert_close(y, expected.bfloat16(), torch.bfloat16, case.reduction, "fused forward")
    assert calls == [False]
    transposed = TCase(2, 2, 8, 8, (6, 7), (5, 5), padding=2, groups=8)
    check_transposed(transposed, torch.bfloat16, "channels_last", activation="relu")
    assert calls[1] is True


def test_tuning_keys(tied_timing):
    """A channels-last 7x7 depthwise layer is tuned under the keys ``tune --dry-run`` lists: the
    patch forward (``PATCH_TILES`` timed), the patch forward of the input gradient and the patch
    weight gradient (``PATCH_WEIGHT_GRAD_TILES``; the direct kernels gated behind the patch
    kernels are not tuned); a second call finds them cached."""
    problem = ConvProblem((2, 16, 9, 10), (16, 1, 7, 7), (1, 1), (3, 3), (1, 1), 16, torch.bfloat16, True)
    x, w = (t.requires_grad_() for t in problem.tensors("cpu"))
    with select.autotuning("first_use") as records:
        y = triton_conv.conv2d(x, w, None, problem.stride, problem.padding, problem.dilation, problem.groups)
        y.backward(_channels_last(torch.randn_like(y)))
    keys = problem_keys(problem, backward=True)
    names = ("patch_forward", "patch_forward (input_grad)", "patch_weight_grad")
    assert list(keys) == list(names)
    # With "same" padding the input gradient's problem is the forward's: one key, tuned once.
    assert keys["patch_forward"] == keys["patch_forward (input_grad)"]
    assert [record.key for record in records] == [keys["patch_forward"], keys["patch_weight_grad"]]
    # The interpreter's heuristic tile, then the tiles first use times (those equal to it once
    # fitted to the image's 9 patches of 4x4, 16 rows, counted once).
    assert records[0].timed == 1 + min(select.FIRST_USE_TILES, len(PATCH_TILES))
    fitted = {fit_patch_rows(problem.spec(), t) for t in PATCH_WEIGHT_GRAD_TILES[: select.FIRST_USE_TILES]}
    assert records[1].timed == len(fitted | {patch_weight_grad_tile(problem.spec())})
    with select.autotuning("first_use") as again:
        triton_conv.conv2d(x, w, None, problem.stride, problem.padding, problem.dilation, problem.groups)
    assert again == []


def test_rule():
    """The patch kernel takes channels-last depthwise convolutions in 16-bit floats with unit
    steps and 25 taps or more; not the default layout, float32, a stride, a 3x3 filter, a channel
    multiplier, or TRITON_CONV_BAND_KERNELS=0 (the module attribute it sets); the weight gradient
    not where its partials would be too large."""

    def uses(layout="channels_last", dtype=torch.bfloat16, kernel=(5, 5), stride=1, out_channels=8):
        case = ConvCase(2, 1, 8, out_channels, (9, 9), kernel, stride=stride, padding=1, groups=8)
        x, _, _ = make_inputs(case, dtype, layout)
        return dispatch.uses_patch_kernel(x, _spec(case))

    assert uses()
    assert not uses(layout="contiguous")
    assert not uses(dtype=torch.float32)
    assert not uses(stride=2)
    assert not uses(kernel=(3, 3))
    assert not uses(out_channels=16)
    # The weight gradient also bounds its partials of G: a 7x7x7 filter over a 96^3 volume would
    # take 1728 splits (one per block of patches) of 48 x 56 x 2 x 7 floats, 248 MB for 81 MB of input.
    volume, small = (
        torch.empty(shape, dtype=torch.bfloat16, device="meta") for shape in ((1, 48, 96, 96, 96), (2, 48, 16, 16, 16))
    )
    filter_7 = torch.empty(48, 1, 7, 7, 7, dtype=torch.bfloat16, device="meta")
    for x, fits in ((volume, False), (small, True)):
        x = x.to(memory_format=torch.channels_last_3d)
        spec = conv_spec(x, filter_7, None, stride=1, padding=3, dilation=1, groups=48, ndim=3)
        with planning_gpu_tiles():  # as a GPU sizes them
            assert dispatch.uses_patch_kernel(x, spec) and dispatch.uses_patch_weight_grad(x, spec) == fits
    dispatch_band_switch = dispatch.BAND_KERNELS_ENABLED
    try:
        dispatch.BAND_KERNELS_ENABLED = False
        assert not uses()
    finally:
        dispatch.BAND_KERNELS_ENABLED = dispatch_band_switch
