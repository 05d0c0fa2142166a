"""Batching rules (``torch.vmap``) for the convolution ops (transposed included): a vmapped
convolution is one convolution.

A vmap dimension of size B on the input (or the output gradient, or the residual) alone folds
into the convolution's batch: B*N samples. A vmap dimension on the weight (or the bias) turns
into groups: B independent convolutions are one convolution with B times the groups, over the B
inputs stacked along channels (an unbatched input is repeated B times). The weight gradient sums
over the batch, so its rule always takes the grouped form. Every rule returns its outputs with
the vmap dimension first.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..kernels.epilogue import NEEDS_PRE_ACTIVATION
from .ops import activation_grad, conv_forward, conv_input_grad, conv_weight_grad
from .transpose import conv_transpose_forward

Dim = int | None


def _batch_first(t: torch.Tensor, dim: Dim, size: int) -> torch.Tensor:
    """``t`` with its vmap dimension first; an unbatched ``t`` expanded to ``size`` along it."""
    return t.expand(size, *t.shape) if dim is None else t.movedim(dim, 0)


def _into_batch(t: torch.Tensor, dim: Dim, size: int) -> torch.Tensor:
    """(B, N, ...) -> (B*N, ...)."""
    return _batch_first(t, dim, size).flatten(0, 1)


def _out_of_batch(t: torch.Tensor, size: int) -> torch.Tensor:
    """(B*N, ...) -> (B, N, ...)."""
    return t.unflatten(0, (size, t.shape[0] // size))


def _into_channels(t: torch.Tensor, dim: Dim, size: int) -> torch.Tensor:
    """(B, N, C, ...) -> (N, B*C, ...): the B problems side by side as groups."""
    return _batch_first(t, dim, size).movedim(0, 1).flatten(1, 2)


def _out_of_channels(t: torch.Tensor, size: int) -> torch.Tensor:
    """(N, B*C, ...) -> (B, N, C, ...)."""
    return t.unflatten(1, (size, t.shape[1] // size)).movedim(1, 0)


def _stacked_filters(t: torch.Tensor, dim: Dim, size: int) -> torch.Tensor:
    """(B, K, ...) weights or biases -> (B*K, ...): group b*groups + g holds problem b's group g."""
    return _into_batch(t, dim, size)


def _epilogue_rule(op: Any) -> Any:
    """The batching rule of a fused convolution op (``conv_forward`` or
    ``conv_transpose_forward``): its arguments are input, weight, bias and residual, then the
    geometry ending in groups, then the activation; its outputs the output and the pre-activation.
    A transposed weight's leading dimension is its input channels, which the groups split as a
    forward weight's output channels are: the same stacking serves both."""

    def rule(
        info: Any,
        in_dims: tuple[Dim, ...],
        input: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        residual: torch.Tensor | None,
        *constants: Any,
    ) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[Dim, Dim]]:
        *geometry, groups, activation = constants
        size = info.batch_size
        input_dim, weight_dim, bias_dim, residual_dim = in_dims[:4]
        if weight_dim is None and bias_dim is None:
            into, out_of = _into_batch, _out_of_batch
        else:
            into, out_of = _into_channels, _out_of_channels
            weight = _stacked_filters(weight, weight_dim, size)
            bias = _stacked_filters(bias, bias_dim, size) if bias is not None else None
            groups *= size
        residual = into(residual, residual_dim, size) if residual is not None else None
        out, pre_activation = op(into(input, input_dim, size), weight, bias, residual, *geometry, groups, activation)
        if activation not in NEEDS_PRE_ACTIVATION:  # the empty placeholder, the same for every problem
            return (out_of(out, size), pre_activation), (0, None)
        return (out_of(out, size), out_of(pre_activation, size)), (0, 0)

    return rule


def _input_grad_rule(
    info: Any,
    in_dims: tuple[Dim, ...],
    grad_output: torch.Tensor,
    weight: torch.Tensor,
    input_shape: Sequence[int],
    channels_last: bool,
    *constants: Any,
) -> tuple[torch.Tensor, int]:
    """A vmap dimension on the output gradient alone folds into the batch, one on the weight into
    groups (as in ``_epilogue_rule``); the input's shape grows with it along the batch or the channels."""
    *geometry, groups = constants
    size = info.batch_size
    grad_output_dim, weight_dim = in_dims[:2]
    shape = list(input_shape)
    if weight_dim is None:
        into, out_of = _into_batch, _out_of_batch
        shape[0] *= size
    else:
        into, out_of = _into_channels, _out_of_channels
        weight = _stacked_filters(weight, weight_dim, size)
        shape[1] *= size
        groups *= size
    grad_input = conv_input_grad(
        into(grad_output, grad_output_dim, size), weight, shape, channels_last, *geometry, groups
    )
    return out_of(grad_input, size), 0


def _weight_grad_rule(
    info: Any,
    in_dims: tuple[Dim, ...],
    grad_output: torch.Tensor,
    input: torch.Tensor,
    weight_shape: Sequence[int],
    *constants: Any,
) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[Dim, Dim]]:
    *geometry, groups, bias_grad = constants
    size = info.batch_size
    grad_output_dim, input_dim = in_dims[:2]
    grad_weight, grad_bias = conv_weight_grad(
        _into_channels(grad_output, grad_output_dim, size),
        _into_channels(input, input_dim, size),
        [weight_shape[0] * size, *weight_shape[1:]],
        *geometry,
        groups * size,
        bias_grad,
    )
    grad_weight = _out_of_batch(grad_weight, size)
    if not bias_grad:  # the empty placeholder
        return (grad_weight, grad_bias), (0, None)
    return (grad_weight, _out_of_batch(grad_bias, size)), (0, 0)


def _activation_grad_rule(
    info: Any, in_dims: tuple[Dim, ...], grad_output: torch.Tensor, saved: torch.Tensor, activation: str
) -> tuple[torch.Tensor, int]:
    size = info.batch_size
    grad_output_dim, saved_dim = in_dims[:2]
    saved = _batch_first(saved, saved_dim, size)
    # The elementwise kernel walks dense memory: an expanded (zero-stride) tensor is copied.
    if saved_dim is None:
        saved = saved.contiguous()
    return activation_grad(_batch_first(grad_output, grad_output_dim, size), saved, activation), 0


conv_forward.register_vmap(_epilogue_rule(conv_forward))
conv_transpose_forward.register_vmap(_epilogue_rule(conv_transpose_forward))
conv_input_grad.register_vmap(_input_grad_rule)
conv_weight_grad.register_vmap(_weight_grad_rule)
activation_grad.register_vmap(_activation_grad_rule)
