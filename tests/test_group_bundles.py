"""Grouped convolutions of 4-15 channels per group in 16-bit dtypes, on the GEMM over bundles of
groups (``dispatch.group_bundle``): the forward and input gradient with a zero filter between the
groups of a bundle, a non-finite flag and the direct kernel gated on it; the weight gradient with
the blocks between groups dropped."""

import pytest
import torch

import triton_conv
from triton_conv.kernels import dispatch
from triton_conv.kernels.common import recording_launches
from triton_conv.kernels.dispatch import forward_bundle, group_bundle, input_grad_bundle
from triton_conv.spec import conv_spec

from .checks import check_backward, check_forward, check_gated_recomputation, check_transposed
from .reference import ConvCase, TCase, assert_close, make_inputs, reference_forward

pytestmark = [
    pytest.mark.backward,
    # NumPy, running the interpreted kernels, warns about the NaN the non-finite tests make.
    pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning"),
]


def _spec(case: ConvCase):
    x, w, b = make_inputs(case, torch.float64)
    return conv_spec(x, w, b, case.stride, case.padding, case.dilation, case.groups, case.ndim)


def _bundled_groups(launches) -> list[int]:
    """The groups of each GEMM launch that flags tiles not finite; each is followed by the direct
    kernel gated on its flag."""
    flagging = [i for i, launch in enumerate(launches) if launch.constexprs.get("FLAG_NOT_FINITE")]
    for i in flagging:
        assert launches[i + 1].constexprs.get("GATED"), launches
        assert launches[i + 1].args["flag_ptr"] is launches[i].args["flag_ptr"]
    return [launches[i].grid[2] for i in flagging]


BUNDLED = [
    # (case, groups per bundle of the forward, the input gradient, the weight gradient; 1: none)
    # ResNeXt's 32 groups of 4 channels in small: two bundles of 16 groups (64 channels); padded,
    # unit steps: the forward and input gradient on the TMA kernel.
    (ConvCase(2, 2, 128, 128, (5, 6), (3, 3), padding=1, groups=32), (16, 16, 16)),
    # 6 groups of 8 channels, strided and dilated: one bundle of 48 channels, the forward on the
    # pointer kernel; the input gradient (strided) on the direct kernel.
    (ConvCase(1, 2, 48, 48, (23,), (5,), stride=2, padding=3, dilation=2, groups=6), (6, 1, 6)),
    # 3-D, 4 channels per group into 2 each: one bundle of 16 channels for the weight gradient;
    # the forward's would have 8 output channels (BUNDLE_MIN_OUTPUTS), so the direct kernels.
    (ConvCase(3, 1, 16, 8, (3, 4, 5), (3, 3, 3), padding=1, groups=4), (1, 1, 4)),
    # 4 channels per group, 20 groups: bundles of 4, the most that divide the groups and make a
    # multiple of 16 channels; the weight gradient only, as above.
    (ConvCase(2, 1, 80, 40, (4, 7), (1, 3), padding=(0, 1), groups=20, bias=False), (1, 1, 4)),
    # 1-D, 4 channels per group into 8: bundles of 32 input channels, of 64 output channels.
    (ConvCase(1, 2, 32, 64, (9,), (3,), padding=1, groups=8), (8, 8, 8)),
    # 3-D without padding: the forward on the pointer kernel.
    (ConvCase(3, 1, 32, 32, (3, 4, 5), (3, 3, 3), groups=8, bias=False), (8, 8, 8)),
    # 1 input channel per group into 4 (a depthwise convolution with 4 multipliers): the input
    # gradient's reduction is 4 channels per group, but its bundle's outputs only 16 wide.
    (ConvCase(2, 1, 16, 64, (5, 6), (3, 3), padding=1, groups=16), (1, 1, 1)),
]


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("case, bundles", BUNDLED, ids=lambda c: getattr(c, "id", ""))
def test_bundled_groups(case, bundles, dtype, layout):
    """Each pass that bundles runs one GEMM launch over bundles of groups: the forward (and,
    with unit steps, the input gradient) one that flags tiles not finite, then the direct kernel
    gated on the flag; the weight gradient one whose blocks of each group's own channels are
    kept. The output and every gradient match torch's."""
    spec = _spec(case)
    forward, input_grad, weight_grad = bundles
    assert (forward_bundle(spec, dtype), input_grad_bundle(spec, dtype), group_bundle(spec, dtype)) == bundles
    x, w, b = make_inputs(case, dtype, layout)
    y = torch.empty(spec.out_shape, dtype=dtype)
    with recording_launches() as launches:
        dispatch.forward(x, w, b, spec, y)
    assert _bundled_groups(launches) == ([case.groups // forward] if forward > 1 else [])
    with recording_launches() as launches:
        dispatch.input_grad(y, w, spec, torch.empty_like(x))
    assert _bundled_groups(launches) == ([case.groups // input_grad] if input_grad > 1 else [])
    with recording_launches() as launches:
        dispatch.weight_grad(y, x, spec, torch.empty_like(w), None)
    gemm = [launch for launch in launches if "GROUPS" in launch.args and "SPLIT_K" in launch.args]
    assert [launch.args["GROUPS"] for launch in gemm] == ([case.groups // weight_grad] if weight_grad > 1 else [])
    check_forward(case, dtype, layout)
    check_backward(case, dtype, layout)


def test_bundled_groups_equal_the_direct_kernel(monkeypatch):
    """In float64 (let through for the test) the bundles' gradient equals the direct kernel's to
    rounding: the dropped blocks between groups never reach the kept ones."""
    case = BUNDLED[1][0]
    x, w, _ = make_inputs(case, torch.float64)
    spec = _spec(case)
    dy = torch.randn(spec.out_shape, dtype=torch.float64)
    results = []
    for dtypes in ((torch.float64,), ()):
        monkeypatch.setattr(dispatch, "BUNDLE_DTYPES", dtypes)
        grad_weight, grad_bias = torch.empty_like(w), torch.empty(case.out_channels, dtype=torch.float64)
        dispatch.weight_grad(dy, x, spec, grad_weight, grad_bias)
        results.append((grad_weight, grad_bias))
    (bundled_w, bundled_b), (direct_w, direct_b) = results
    torch.testing.assert_close(bundled_w, direct_w, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(bundled_b, direct_b, rtol=1e-12, atol=1e-12)


def test_bundled_weight_grad_keeps_non_finite_values_in_their_group():
    """A NaN and an infinity in one group's input make only that group's weight gradient
    non-finite, NaN and infinite where torch's is: the bundle's products of them with the other
    groups' output gradients are dropped."""
    case = BUNDLED[2][0]
    x, w, _ = make_inputs(case, torch.bfloat16)
    x[0, 7, 1, 2, 3] = float("inf")  # group 1 (channels 4-7)
    x[0, 5, 2, 0, 4] = float("nan")
    spec = _spec(case)
    dy = torch.randn(spec.out_shape, dtype=torch.float64).to(torch.bfloat16)
    grad_weight = torch.empty_like(w)
    dispatch.weight_grad(dy, x, spec, grad_weight, None)
    expected = torch.nn.grad.conv3d_weight(x.double(), w.shape, dy.double(), padding=1, groups=case.groups)
    finite = expected.isfinite()
    assert expected.isnan().any() and expected.isinf().any()
    assert not finite[2:4].all() and finite[:2].all() and finite[4:].all()
    assert torch.equal(grad_weight.isnan(), expected.isnan())
    assert torch.equal(grad_weight.isposinf(), expected.isposinf())
    assert torch.equal(grad_weight.isneginf(), expected.isneginf())
    kept = finite.flatten(1).all(1)
    assert_close(grad_weight[kept], expected[kept].bfloat16(), torch.bfloat16, 60, "the finite groups")


def test_few_channels_or_float32_not_bundled(monkeypatch):
    """No bundles where they would not make a multiple of the matrix unit's 16 channels, for
    depthwise convolutions, in float32, or with TRITON_CONV_GROUP_BUNDLES=0 (the module attribute
    it sets)."""
    resnext = _spec(ConvCase(2, 1, 128, 128, (5, 5), (3, 3), groups=32))
    assert group_bundle(resnext, torch.bfloat16) == 16
    assert group_bundle(resnext, torch.float32) == 1
    assert group_bundle(_spec(ConvCase(2, 1, 15, 6, (5, 5), (3, 3), groups=3)), torch.bfloat16) == 1
    assert group_bundle(_spec(ConvCase(2, 1, 20, 8, (5, 5), (3, 3), groups=4)), torch.bfloat16) == 1
    assert group_bundle(_spec(ConvCase(2, 1, 64, 64, (5, 5), (3, 3), groups=64)), torch.bfloat16) == 1
    assert group_bundle(_spec(ConvCase(2, 1, 64, 64, (5, 5), (3, 3), groups=2)), torch.bfloat16) == 1
    monkeypatch.setattr(dispatch, "GROUP_BUNDLES_ENABLED", False)
    assert group_bundle(resnext, torch.bfloat16) == 1


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("case", [BUNDLED[0][0], BUNDLED[5][0]], ids=lambda c: c.id)
def test_bundles_keep_non_finite_values_in_their_group(case, layout):
    """A NaN, +inf and -inf in the input (forward) or the output gradient (input gradient) make
    NaN and infinities exactly where torch's are: the GEMM of the bundles flags its tiles and the
    gated direct kernel computes the output again. On finite data the flag stays clear."""
    x, w, b = make_inputs(case, torch.bfloat16, layout)
    spec = _spec(case)
    dy = torch.randn(spec.out_shape, dtype=torch.float64).to(torch.bfloat16)

    check_gated_recomputation(case, spec, x, w, b, dy)


def test_bundled_groups_fused_epilogue_and_transposed():
    """The bundles carry the fused epilogue (bias, residual, activation) of the forward and of a
    transposed convolution (whose output is an input gradient), and its gradients."""
    case = BUNDLED[4][0]
    x, w, b = make_inputs(case, torch.bfloat16, "channels_last")
    residual = torch.randn(case.batch, case.out_channels, *case.size, dtype=torch.float64).to(torch.bfloat16)
    y = triton_conv.conv1d(x, w, b, padding=1, groups=case.groups, activation="relu", residual=residual)
    expected = torch.relu(reference_forward(case, x, w, b) + residual.double())
    assert_close(y, expected.bfloat16(), torch.bfloat16, case.reduction, "fused forward")
    # 16 input channels in 4 groups to 32: as a convolution, 8 channels per group into 4.
    transposed = TCase(2, 2, 16, 32, (5, 6), (3, 3), padding=1, groups=4)
    check_transposed(transposed, torch.bfloat16, "channels_last", activation="relu")
