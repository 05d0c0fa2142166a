"""Forward-mode AD and torch.func transforms give F.conv*'s and F.conv_transpose*'s answers
(float64, tiny problems)."""

from __future__ import annotations

import pytest
import torch
import torch.autograd.forward_ad as fwAD
from torch import func

import triton_conv
from triton_conv import autograd as ops
from triton_conv.kernels.epilogue import ACTIVATIONS, TORCH_ACTIVATIONS
from triton_conv.testing import TORCH_CONV, TORCH_CONV_TRANSPOSE, TRITON_CONV, TRITON_CONV_TRANSPOSE

from .cases import TRANSFORM_CASES, named, params
from .reference import DEVICE, TCase, make_inputs, make_transposed_inputs

pytestmark = pytest.mark.transforms

# (case, fused activation, with a residual): the plain convolution on each case, every activation
# once (on the cases in turn, every other one with a residual), and the transposed convolutions
# plain and fused.
CONV_CASES = [c for c in TRANSFORM_CASES if not isinstance(c, TCase)]
VARIANTS = [(case, None, False) for case in CONV_CASES] + [
    (CONV_CASES[i % len(CONV_CASES)], activation, i % 2 == 0) for i, activation in enumerate(ACTIVATIONS)
]
TRANSPOSED_VARIANTS = [(case, None, False) for case in TRANSFORM_CASES if isinstance(case, TCase)] + [
    (named("tiny_gemm_transposed_2d"), "silu", True),
    (named("tiny_direct_transposed_1d"), "relu6", False),
]


def _id(variant) -> str:
    case, activation, residual = variant
    return f"{case.id}-{activation or 'plain'}" + ("-residual" if residual else "")


# What the slower tests run by default (make test-thorough runs every variant): the plain
# convolutions, a few activations, a 1-D plain and a 2-D fused transposed convolution.
TRANSPOSED_DEFAULT = [
    (named("tiny_direct_transposed_1d"), None, False),
    (named("tiny_gemm_transposed_2d"), "silu", True),
]
JACOBIAN_DEFAULT = [v for v in VARIANTS if v[1] in (None, "relu", "gelu")] + TRANSPOSED_DEFAULT
# Jacobians and hessians are (output x input)-sized.
JACOBIAN_VARIANTS = params(VARIANTS + TRANSPOSED_VARIANTS, JACOBIAN_DEFAULT, ids=_id)
_VMAPPED = [v for v in VARIANTS if v[1] in (None, "relu", "silu", "sigmoid")]
VMAP_VARIANTS = params(_VMAPPED + TRANSPOSED_VARIANTS, _VMAPPED + TRANSPOSED_DEFAULT, ids=_id)


def _problem(variant):
    """Inputs (x, w, b, r) and the two functions of them to compare: ours and torch's."""
    case, activation, with_residual = variant
    if isinstance(case, TCase):
        x, w, b = (t.detach() for t in make_transposed_inputs(case, torch.float64))
        our_conv, torch_conv = TRITON_CONV_TRANSPOSE[case.ndim], TORCH_CONV_TRANSPOSE[case.ndim]
    else:
        x, w, b = make_inputs(case, torch.float64)
        our_conv, torch_conv = TRITON_CONV[case.ndim], TORCH_CONV[case.ndim]
    out_shape = torch_conv(x, w, b, **case.kwargs()).shape
    r = torch.randn(out_shape, dtype=torch.float64, device=DEVICE) if with_residual else torch.zeros(out_shape)

    def ours(x, w, b, r):
        return our_conv(x, w, b, **case.kwargs(), activation=activation, residual=r)

    def theirs(x, w, b, r):
        return TORCH_ACTIVATIONS[activation or "none"](torch_conv(x, w, b, **case.kwargs()) + r)

    return (x, w, b, r.to(DEVICE, torch.float64)), ours, theirs


def _close(got, want) -> None:
    for g, w in zip(torch.utils._pytree.tree_leaves(got), torch.utils._pytree.tree_leaves(want), strict=True):
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("variant", params(VARIANTS + TRANSPOSED_VARIANTS, ids=_id))
def test_jvp_and_forward_ad(variant):
    primals, ours, theirs = _problem(variant)
    tangents = tuple(torch.randn_like(p) for p in primals)
    _close(func.jvp(ours, primals, tangents), func.jvp(theirs, primals, tangents))
    with fwAD.dual_level():
        duals = [fwAD.make_dual(p, t) for p, t in zip(primals, tangents)]
        got = fwAD.unpack_dual(ours(*duals))
        want = fwAD.unpack_dual(theirs(*duals))
        assert got.tangent is not None
        _close((got.primal, got.tangent), (want.primal, want.tangent))


@pytest.mark.parametrize("variant", JACOBIAN_VARIANTS)
def test_jacfwd_jacrev_grad_vjp(variant):
    primals, ours, theirs = _problem(variant)
    argnums = (0, 1, 2, 3)
    _close(func.jacfwd(ours, argnums)(*primals), func.jacfwd(theirs, argnums)(*primals))
    _close(func.jacrev(ours, argnums)(*primals), func.jacrev(theirs, argnums)(*primals))
    cotangent = torch.randn_like(theirs(*primals))

    def loss(f):
        return lambda *args: (f(*args) * cotangent).sum()

    _close(func.grad(loss(ours), argnums)(*primals), func.grad(loss(theirs), argnums)(*primals))
    (_, ours_vjp), (_, theirs_vjp) = func.vjp(ours, *primals), func.vjp(theirs, *primals)
    _close(ours_vjp(cotangent), theirs_vjp(cotangent))


@pytest.mark.parametrize("variant", JACOBIAN_VARIANTS)
def test_hessian_and_double_backward(variant):
    """Second derivatives, fused activations included: hessian (forward over reverse) in the
    input and the weight, and a gradient penalty (reverse over reverse)."""
    primals, ours, theirs = _problem(variant)
    weights = torch.randn_like(theirs(*primals))

    def loss(f):
        return lambda x, w: (f(x, w, *primals[2:]) * weights).tanh().sum()

    _close(func.hessian(loss(ours), (0, 1))(*primals[:2]), func.hessian(loss(theirs), (0, 1))(*primals[:2]))

    def penalty(f):
        x, w = (p.detach().requires_grad_() for p in primals[:2])
        (gx,) = torch.autograd.grad(loss(f)(x, w), [x], create_graph=True)
        return torch.autograd.grad(gx.square().sum(), [x, w])

    _close(penalty(ours), penalty(theirs))


@pytest.mark.parametrize("variant", VMAP_VARIANTS)
def test_vmap(variant):
    """vmap over the input, over the weight and bias, over everything; and gradients under vmap."""
    (x, w, b, r), ours, theirs = _problem(variant)
    stack = [torch.randn(3, *t.shape, dtype=t.dtype, device=t.device) for t in (x, w, b, r)]
    for in_dims in [(0, None, None, None), (None, 0, 0, None), (0, 0, 0, 0), (1, None, 0, None)]:
        args = [s.movedim(0, d) if d is not None else t for s, t, d in zip(stack, (x, w, b, r), in_dims)]
        _close(func.vmap(ours, in_dims)(*args), func.vmap(theirs, in_dims)(*args))

    def per_sample_grads(f):
        return func.vmap(func.grad(lambda x, w: f(x[None], w, b, r[:1]).square().sum(), (0, 1)), (0, None))

    _close(per_sample_grads(ours)(x, w), per_sample_grads(theirs)(x, w))


def test_unbatched_input_under_vmap():
    x = torch.randn(4, 2, 5, dtype=torch.float64, device=DEVICE)  # vmap over 4 unbatched (C, L) inputs
    w = torch.randn(3, 2, 2, dtype=torch.float64, device=DEVICE)
    got = func.vmap(lambda x: triton_conv.conv1d(x, w, padding=1))(x)
    torch.testing.assert_close(got, torch.nn.functional.conv1d(x, w, padding=1), rtol=1e-12, atol=1e-12)


def test_ops_called_directly_refuse_forward_ad():
    """The raw custom ops have no forward formula of their own: a clear error, never a silent
    zero; the differentiable entry points are the way in."""
    x = torch.randn(1, 2, 4, 4, dtype=torch.float64, device=DEVICE)
    w = torch.randn(3, 2, 3, 3, dtype=torch.float64, device=DEVICE)
    geometry = ([1, 1], [0, 0, 0, 0], [1, 1], 1)
    with fwAD.dual_level():
        dual = fwAD.make_dual(x, torch.ones_like(x))
        with pytest.raises(RuntimeError, match="conv_forward called directly has no forward-mode derivative"):
            ops.conv_forward(dual, w, None, None, *geometry, "none")
        tangent = fwAD.unpack_dual(ops.conv(dual, w, None, *geometry)).tangent
    torch.testing.assert_close(tangent, torch.nn.functional.conv2d(torch.ones_like(x), w))


def test_transposed_op_called_directly_refuses_forward_ad():
    x = torch.randn(1, 2, 4, 4, dtype=torch.float64, device=DEVICE)
    w = torch.randn(2, 3, 3, 3, dtype=torch.float64, device=DEVICE)
    geometry = ([2, 2], [1, 1], [1, 1], [1, 1], 1)
    with fwAD.dual_level():
        dual = fwAD.make_dual(x, torch.ones_like(x))
        with pytest.raises(RuntimeError, match="conv_transpose_forward called directly has no forward-mode"):
            ops.conv_transpose_forward(dual, w, None, None, *geometry, "none")
        tangent = fwAD.unpack_dual(ops.conv_transpose(dual, w, None, *geometry)).tangent
    want = torch.nn.functional.conv_transpose2d(torch.ones_like(x), w, stride=2, padding=1, output_padding=1)
    torch.testing.assert_close(tangent, want)
