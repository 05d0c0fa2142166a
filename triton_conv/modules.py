"""Drop-in ``nn.Conv1d/2d/3d`` and ``nn.ConvTranspose1d/2d/3d`` subclasses, and in-place
conversion of whole models.

The modules are torch's own (same constructor, defaults, init, ``extra_repr``, ``state_dict``,
``isinstance``); only ``_conv_forward``, which torch's ``forward`` calls, is replaced. Two
optional extras use the fused epilogue: an ``activation`` attribute (None by default, set by
``fuse_for_inference`` or by hand) and a ``residual`` keyword of ``forward``.
"""

from __future__ import annotations

import functools
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from .functional import conv1d, conv2d, conv3d
from .functional_transpose import conv_transpose1d, conv_transpose2d, conv_transpose3d
from .spec import transposed_output_padding


class _TritonConvMixin:
    """Routes ``nn.Conv*``'s ``_conv_forward`` (padding modes included) through triton_conv."""

    _triton_conv: Callable[..., torch.Tensor]
    # Applied in the convolution's epilogue: None or a name in triton_conv.kernels.epilogue.ACTIVATIONS.
    activation: str | None = None

    def _conv_forward(
        self,
        input: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        residual: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return type(self)._triton_conv(
            input,
            weight,
            bias,
            self.stride,
            self.padding,
            self.dilation,
            self.groups,
            padding_mode=self.padding_mode,
            activation=self.activation,
            residual=residual,
        )

    def extra_repr(self) -> str:
        text = super().extra_repr()  # type: ignore[misc]
        return text + f", activation={self.activation!r}" if self.activation is not None else text


class _ResidualForwardMixin:
    """``forward(input, residual=None)``; kept apart so that converted user subclasses keep their own forward."""

    def forward(self, input: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """The convolution, plus ``residual`` (output-shaped) before the activation if given."""
        return self._conv_forward(input, self.weight, self.bias, residual)


class Conv1d(_ResidualForwardMixin, _TritonConvMixin, nn.Conv1d):
    """``nn.Conv1d`` computed by triton_conv."""

    _triton_conv = staticmethod(conv1d)


class Conv2d(_ResidualForwardMixin, _TritonConvMixin, nn.Conv2d):
    """``nn.Conv2d`` computed by triton_conv."""

    _triton_conv = staticmethod(conv2d)


class Conv3d(_ResidualForwardMixin, _TritonConvMixin, nn.Conv3d):
    """``nn.Conv3d`` computed by triton_conv."""

    _triton_conv = staticmethod(conv3d)


class _TritonConvTransposeMixin:
    """``nn.ConvTranspose*``'s ``forward(input, output_size=None)`` through triton_conv (torch's
    calls ``F.conv_transpose*`` directly, so the whole forward is replaced)."""

    _triton_conv_transpose: Callable[..., torch.Tensor]
    _ndim: int
    # Applied in the convolution's epilogue: None or a name in triton_conv.kernels.epilogue.ACTIVATIONS.
    activation: str | None = None

    def forward(self, input: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        if self.padding_mode != "zeros":
            raise ValueError(f"Only `zeros` padding mode is supported for {type(self).__name__}")
        output_padding = transposed_output_padding(
            input,
            output_size,
            self.stride,
            self.padding,
            self.kernel_size,
            self.dilation,
            self.output_padding,
            self._ndim,
        )
        return type(self)._triton_conv_transpose(
            input,
            self.weight,
            self.bias,
            self.stride,
            self.padding,
            output_padding,
            self.groups,
            self.dilation,
            activation=self.activation,
        )

    def extra_repr(self) -> str:
        text = super().extra_repr()  # type: ignore[misc]
        return text + f", activation={self.activation!r}" if self.activation is not None else text


class ConvTranspose1d(_TritonConvTransposeMixin, nn.ConvTranspose1d):
    """``nn.ConvTranspose1d`` computed by triton_conv."""

    _triton_conv_transpose = staticmethod(conv_transpose1d)
    _ndim = 1


class ConvTranspose2d(_TritonConvTransposeMixin, nn.ConvTranspose2d):
    """``nn.ConvTranspose2d`` computed by triton_conv."""

    _triton_conv_transpose = staticmethod(conv_transpose2d)
    _ndim = 2


class ConvTranspose3d(_TritonConvTransposeMixin, nn.ConvTranspose3d):
    """``nn.ConvTranspose3d`` computed by triton_conv."""

    _triton_conv_transpose = staticmethod(conv_transpose3d)
    _ndim = 3


# The convolutions (what fusion.py fuses), and every class convert_model swaps.
_TORCH_TO_TRITON: dict[type[nn.Module], type[nn.Module]] = {nn.Conv1d: Conv1d, nn.Conv2d: Conv2d, nn.Conv3d: Conv3d}
_TRANSPOSED_TO_TRITON: dict[type[nn.Module], type[nn.Module]] = {
    nn.ConvTranspose1d: ConvTranspose1d,
    nn.ConvTranspose2d: ConvTranspose2d,
    nn.ConvTranspose3d: ConvTranspose3d,
}
_CONVERTED = {**_TORCH_TO_TRITON, **_TRANSPOSED_TO_TRITON}
_TRITON_TO_TORCH = {v: k for k, v in _CONVERTED.items()}
_subclass_cache: dict[type[nn.Module], type[nn.Module]] = {}
_subclass_lock = threading.Lock()


def _triton_class(cls: type[nn.Module], include_subclasses: bool) -> type[nn.Module] | None:
    """The triton_conv class for a module class, or None to leave the module alone."""
    if cls in _CONVERTED:
        return _CONVERTED[cls]
    if not include_subclasses or issubclass(cls, _TritonConvMixin | _TritonConvTransposeMixin):
        return None
    base = next((b for b in _CONVERTED if issubclass(cls, b)), None)
    # A transposed subclass with its own forward calls F.conv_transpose* itself: nothing to route.
    if base is None or (base in _TRANSPOSED_TO_TRITON and cls.forward is not base.forward):
        return None
    with _subclass_lock:  # one class per user class, whichever thread converts first
        if cls not in _subclass_cache:
            triton_base = _CONVERTED[base]
            mixin = next(b for b in triton_base.__bases__ if b in (_TritonConvMixin, _TritonConvTransposeMixin))
            namespace: dict[str, Any] = {
                k: v for k, v in vars(triton_base).items() if k in ("_triton_conv", "_triton_conv_transpose", "_ndim")
            }
            namespace["__reduce_ex__"] = _reduce_converted_subclass
            if _has_own_forward(cls):
                namespace["forward"] = _routed_forward(cls)
            _subclass_cache[cls] = type(f"Triton{cls.__name__}", (mixin, cls), namespace)
        return _subclass_cache[cls]


def _has_own_forward(cls: type[nn.Module]) -> bool:
    """Whether ``cls`` overrides torch's ``forward`` (which would call ``_conv_forward``)."""
    base = next(b for b in _CONVERTED if issubclass(cls, b))
    return cls.forward is not base.forward


# The functional convolutions a subclass's own forward may call, and triton_conv's twins.
_ROUTED_FUNCTIONS: dict[Callable[..., Any], Callable[..., torch.Tensor]] = {
    F.conv1d: conv1d,
    F.conv2d: conv2d,
    F.conv3d: conv3d,
}
# Lower-level convolution entry points that have no triton_conv twin with the same arguments.
_UNROUTED_FUNCTIONS = {
    torch.convolution,
    torch._convolution,
    torch.ops.aten.convolution,
    torch.ops.aten.convolution.default,
    torch.ops.aten._convolution,
    torch.ops.aten._convolution.default,
}
# Converted user classes whose forward was seen calling one of those (warned once each).
_bypassing_classes: set[type[nn.Module]] = set()


class _RouteConvolutions(TorchFunctionMode):
    """While a converted subclass's own forward runs: its ``F.conv1d/2d/3d`` calls run triton_conv's.

    Calls made inside a handled function (triton_conv's own ops included) are not seen: a mode is
    off while its handler runs.
    """

    def __init__(self, owner: type[nn.Module]) -> None:
        super().__init__()
        self.owner = owner

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        if func in _ROUTED_FUNCTIONS:
            return _ROUTED_FUNCTIONS[func](*args, **kwargs)
        if func in _UNROUTED_FUNCTIONS and self.owner not in _bypassing_classes:
            _bypassing_classes.add(self.owner)
            warnings.warn(
                f"triton_conv: {self.owner.__name__}.forward calls {getattr(func, '__name__', func)}, which "
                "triton_conv cannot route: that convolution runs in torch. Call F.conv1d/2d/3d or "
                "self._conv_forward there instead",
                stacklevel=2,
            )
        return func(*args, **kwargs)


def _routed_forward(user_class: type[nn.Module]) -> Callable[..., torch.Tensor]:
    """``user_class.forward`` with its functional convolutions routed through triton_conv."""
    forward = user_class.forward

    @functools.wraps(forward)
    def routed(self: nn.Module, *args: Any, **kwargs: Any) -> torch.Tensor:
        with _RouteConvolutions(user_class):
            return forward(self, *args, **kwargs)

    return routed


def _user_class(cls: type[nn.Module]) -> type[nn.Module]:
    """The user's class a converted subclass was made from."""
    return next(user for user, made in _subclass_cache.items() if made is cls)


def _reduce_converted_subclass(self: nn.Module, protocol: int) -> tuple:
    """Pickle (and deepcopy) a converted user subclass through its user class: the class made
    for it has no importable name, so unpickling makes it again."""
    user_class = type(self).__bases__[1]
    return _rebuild_converted_subclass, (user_class,), self.__getstate__()


def _rebuild_converted_subclass(user_class: type[nn.Module]) -> nn.Module:
    cls = _triton_class(user_class, include_subclasses=True)
    assert cls is not None
    return cls.__new__(cls)


def convert_model(model: nn.Module, *, include_subclasses: bool = False) -> nn.Module:
    """Make every ``nn.Conv1d/2d/3d`` and ``nn.ConvTranspose1d/2d/3d`` in ``model`` (itself included)
    compute with triton_conv.

    Conversion is in place: each module keeps its identity, Parameter objects (an optimizer built
    before still works), buffers, hooks, device, dtype and training mode; only its class changes.
    Subclasses of torch's conv modules that you wrote are left alone unless ``include_subclasses``,
    which converts them to a subclass of theirs that runs their code with triton_conv's convolution:
    torch's ``forward`` calls triton_conv's ``_conv_forward``, and while a subclass's own ``forward``
    runs, its ``F.conv1d/2d/3d`` calls run triton_conv's (a lower-level call such as
    ``torch.convolution`` stays torch's, with a warning naming the class; transposed subclasses are
    converted only when they keep torch's ``forward``). ``conversion_report`` lists what runs
    triton_conv and what does not. Returns ``model``.
    """
    for module in model.modules():
        new_class = _triton_class(type(module), include_subclasses)
        if new_class is not None:
            module.__class__ = new_class
    return model


def revert_model(model: nn.Module) -> nn.Module:
    """Undo ``convert_model``: every triton_conv module becomes torch's class again, in place.

    Raises ``ValueError`` (before changing anything) if a module has a fused ``activation``:
    torch's class would silently drop it.
    """
    fused = [name for name, m in model.named_modules() if getattr(m, "activation", None) is not None]
    if fused:
        raise ValueError(
            f"revert_model: modules {fused} have a fused activation that torch's conv classes cannot "
            "compute; set their .activation to None and add the activation as a module first"
        )
    for module in model.modules():
        cls = type(module)
        if cls in _TRITON_TO_TORCH:
            module.__class__ = _TRITON_TO_TORCH[cls]
        elif cls in _subclass_cache.values():
            module.__class__ = _user_class(cls)
    return model


@dataclass
class ConversionReport:
    """Which convolution modules of a model run triton_conv; ``str()`` gives one line each."""

    converted: dict[str, str] = field(default_factory=dict)  # module name -> how it runs triton_conv
    left: dict[str, str] = field(default_factory=dict)  # module name -> why it runs torch's convolution

    def __str__(self) -> str:
        lines = [f"{len(self.converted)} convolution modules run triton_conv, {len(self.left)} run torch's"]
        lines += [f"  triton_conv  {name or '(model)'}: {how}" for name, how in self.converted.items()]
        lines += [f"  torch        {name or '(model)'}: {why}" for name, why in self.left.items()]
        return "\n".join(lines)


def conversion_report(model: nn.Module) -> ConversionReport:
    """What ``convert_model`` did to ``model``: every ``nn.Conv*``-derived module (transposed ones
    included), whether it runs triton_conv, and if not, why."""
    report = ConversionReport()
    for name, module in model.named_modules():
        cls = type(module)
        if not isinstance(module, nn.modules.conv._ConvNd):
            continue
        if cls in _subclass_cache.values() and (user := _user_class(cls)) in _bypassing_classes:
            report.left[name] = f"{user.__name__}: its forward calls a convolution that triton_conv cannot route"
        elif cls in _subclass_cache.values() and _has_own_forward(user):
            report.converted[name] = f"{user.__name__} (its own forward, whose F.conv1d/2d/3d calls run triton_conv)"
        elif isinstance(module, _TritonConvMixin | _TritonConvTransposeMixin):
            report.converted[name] = _user_class(cls).__name__ if cls in _subclass_cache.values() else cls.__name__
        elif cls in _CONVERTED:
            report.left[name] = f"{cls.__name__}: not converted yet; convert_model(model) converts it"
        elif issubclass(cls, tuple(_TRANSPOSED_TO_TRITON)) and _has_own_forward(cls):
            report.left[name] = f"{cls.__name__}: its own forward calls torch's transposed convolution itself"
        elif issubclass(cls, tuple(_CONVERTED)):
            report.left[name] = (
                f"{cls.__name__}: a subclass of a torch convolution; convert_model(model, include_subclasses=True) "
                "converts it"
            )
        else:
            report.left[name] = f"{cls.__name__}: triton_conv has no module for it"
    return report
