"""Inference fusion: fold BatchNorm into the convolution before it, and fuse conv + BN + residual
add + activation into one triton_conv module call (the kernel's epilogue).

``fuse_for_inference`` finds the chains with ``torch.fx``; a model fx cannot trace is fused only
inside its ``nn.Sequential`` containers. It never changes what the model computes: a BatchNorm
subclass is folded only when it is shown to compute BatchNorm followed by its own ``drop`` and
``act`` modules (timm's ``BatchNormAct2d``); any other is left as it is, with a warning.
"""

from __future__ import annotations

import copy
import operator
import warnings
from collections import Counter, OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp
from torch.nn.modules.batchnorm import _BatchNorm

from .kernels.epilogue import ACTIVATIONS
from .modules import _TORCH_TO_TRITON, conversion_report, convert_model

ConvModule = nn.Conv1d | nn.Conv2d | nn.Conv3d

# Exact classes only: a user subclass may have its own forward, which fusion would bypass.
_FUSIBLE_CONVS = (*_TORCH_TO_TRITON, *_TORCH_TO_TRITON.values())
_ACTIVATION_MODULES: dict[type[nn.Module], str] = {
    nn.ReLU: "relu",
    nn.ReLU6: "relu6",
    nn.SiLU: "silu",
    nn.GELU: "gelu",
    nn.Sigmoid: "sigmoid",
    nn.Tanh: "tanh",
}
_ACTIVATION_FUNCTIONS: dict[object, str] = {
    F.relu: "relu",
    torch.relu: "relu",
    torch.relu_: "relu",
    F.relu6: "relu6",
    F.silu: "silu",
    F.gelu: "gelu",
    F.sigmoid: "sigmoid",
    torch.sigmoid: "sigmoid",
    F.tanh: "tanh",
    torch.tanh: "tanh",
}
# fx records F.sigmoid / F.tanh and Tensor.relu() etc. as method calls.
_ACTIVATION_METHODS = {
    "relu": "relu",
    "relu_": "relu",
    "sigmoid": "sigmoid",
    "sigmoid_": "sigmoid",
    "tanh": "tanh",
    "tanh_": "tanh",
}
_ADD_FUNCTIONS = (operator.add, operator.iadd, torch.add)
# BatchNorm classes whose forward is torch's, and the spatial rank each is probed with.
_PLAIN_BATCHNORMS: dict[type[_BatchNorm], int] = {
    nn.BatchNorm1d: 1,
    nn.BatchNorm2d: 2,
    nn.BatchNorm3d: 3,
    nn.SyncBatchNorm: 2,
}
# Modules that return their input in eval mode: skipped between the links of a chain.
_PASS_THROUGH = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)
_BATCHNORM_LEFT = "not right after a convolution whose output only it uses (or after one that is called more than once)"


@dataclass
class FusionReport:
    """What ``fuse_for_inference`` did, as the ``fusion_report`` attribute of its result;
    ``str(report)`` is a readable summary."""

    traced: bool = True  # False: torch.fx could not trace the model; only nn.Sequential runs were fused
    convolutions: int = 0  # triton_conv convolution modules in the result
    batchnorms_folded: int = 0
    activations_fused: Counter[str] = field(default_factory=Counter)  # epilogue activation name -> count
    residual_adds_fused: int = 0
    left: dict[str, str] = field(default_factory=dict)  # module name -> why it was left as it is

    def __str__(self) -> str:
        how = "chains found by torch.fx" if self.traced else "nn.Sequential runs only (torch.fx could not trace it)"
        activations = ", ".join(f"{name} {count}" for name, count in sorted(self.activations_fused.items()))
        lines = [
            f"fuse_for_inference: {how}",
            f"  {self.convolutions} triton_conv convolutions",
            f"  {self.batchnorms_folded} BatchNorms folded",
            f"  {sum(self.activations_fused.values())} activations fused"
            + (f" ({activations})" if activations else ""),
            f"  {self.residual_adds_fused} residual adds fused",
        ]
        modules_by_reason: dict[str, list[str]] = {}
        for name, why in self.left.items():
            modules_by_reason.setdefault(why, []).append(name or "(model)")
        lines += [f"  left as it was ({', '.join(names)}): {why}" for why, names in modules_by_reason.items()]
        return "\n".join(lines)


def fold_batchnorm(conv: ConvModule, bn: _BatchNorm) -> ConvModule:
    """A new triton_conv ``Conv1d/2d/3d`` computing ``bn(conv(x))`` with ``bn`` in eval mode.

    Per output channel, ``w' = w * s`` and ``b' = (b - running_mean) * s + beta`` with
    ``s = gamma / sqrt(running_var + eps)`` (``gamma = 1, beta = 0`` without affine parameters).
    The result always has a bias; ``conv`` and ``bn`` are not modified.
    """
    base = next((cls for cls in _TORCH_TO_TRITON if isinstance(conv, cls)), None)
    if base is None:
        raise TypeError(
            f"fold_batchnorm(): conv must be an nn.Conv1d, nn.Conv2d or nn.Conv3d, but got {type(conv).__name__}"
        )
    if not isinstance(bn, _BatchNorm):
        raise TypeError(f"fold_batchnorm(): bn must be a BatchNorm module, but got {type(bn).__name__}")
    if bn.num_features != conv.out_channels:
        raise ValueError(
            f"fold_batchnorm(): bn.num_features ({bn.num_features}) must equal conv.out_channels ({conv.out_channels})"
        )
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError(
            "fold_batchnorm(): bn has no running statistics (track_running_stats=False), so it normalizes "
            "with each batch's statistics and cannot be folded into a convolution"
        )
    if getattr(conv, "activation", None) is not None:
        raise ValueError(
            f"fold_batchnorm(): conv applies activation '{conv.activation}', which bn would have to follow"
        )

    # Fold in at least float32, so that a half-precision model is rounded once, at the end.
    dtype = torch.promote_types(conv.weight.dtype, torch.float32)
    with torch.no_grad():
        scale = (bn.running_var.to(dtype) + bn.eps).rsqrt()
        if bn.weight is not None:
            scale = scale * bn.weight.to(dtype)
        bias = conv.bias.to(dtype) if conv.bias is not None else torch.zeros_like(scale)
        bias = (bias - bn.running_mean.to(dtype)) * scale
        if bn.bias is not None:
            bias = bias + bn.bias.to(dtype)
        weight = conv.weight.to(dtype) * scale.reshape(-1, *[1] * (conv.weight.dim() - 1))

    # Built on the meta device: no initialization to throw away, and the global RNG is left alone.
    fused = _TORCH_TO_TRITON[base](
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=True,
        padding_mode=conv.padding_mode,
        device="meta",
        dtype=conv.weight.dtype,
    )
    fused.weight = nn.Parameter(weight.to(conv.weight.dtype))
    fused.bias = nn.Parameter(bias.to(conv.weight.dtype))
    return fused.train(conv.training)


def fuse_for_inference(model: nn.Module, example_inputs: tuple) -> nn.Module:
    """An eval-mode copy of ``model`` with every conv chain fused into one triton_conv module call.

    A chain is an ``nn.Conv1d/2d/3d``, then optionally a BatchNorm (folded into the weights), then
    optionally an add of another tensor of the output's shape (the residual), then optionally an
    activation (relu, relu6, silu, exact gelu, sigmoid, tanh; module, function or method form).
    Each link must be the only user of the one before; ``nn.Identity`` and dropout modules (no-ops
    in eval mode) may sit between links. A BatchNorm subclass with ``drop``/``act`` modules (timm's
    ``BatchNormAct2d``) counts as BatchNorm then those modules when a probe shows that is what it
    computes; other BatchNorm subclasses are left as they are, with a warning naming them.
    ``example_inputs`` are run once through the model to learn which adds are same-shape residuals.
    Convolutions outside any chain are converted to triton_conv as they are. ``model`` itself is
    not modified.

    The result is a ``torch.fx.GraphModule`` (the traced forward, without the model's other
    methods); where fx cannot trace the model, a copy fused inside its ``nn.Sequential``s only.
    Its ``fusion_report`` attribute (a ``FusionReport``) counts what was fused and lists what was
    left and why.
    """
    model = copy.deepcopy(model).eval()
    report = FusionReport()
    _split_batchnorms(model, report)
    try:
        graph_module = _FusedGraphModule(model, _ConvLeafTracer().trace(model), model.__class__.__name__)
    except Exception as error:  # fx raises several types for code it cannot trace
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        warnings.warn(
            f"fuse_for_inference(): torch.fx cannot trace {type(model).__name__} ({reason}); "
            "fusing Conv -> BatchNorm -> activation runs inside nn.Sequential containers only",
            stacklevel=2,
        )
        report.traced = False
        fused = convert_model(_fuse_sequentials(model, report)).eval()
    else:
        with torch.no_grad():
            ShapeProp(graph_module).propagate(*example_inputs)
        for node in list(graph_module.graph.nodes):
            if node.op == "call_module" and type(graph_module.get_submodule(node.target)) in _FUSIBLE_CONVS:
                _fuse_chain(graph_module, node, report)
        graph_module.graph.lint()
        graph_module.delete_all_unused_submodules()
        graph_module.recompile()
        fused = convert_model(graph_module).eval()
    _count_what_is_left(fused, report)
    fused.fusion_report = report
    return fused


def _split_batchnorms(model: nn.Module, report: FusionReport) -> None:
    """Replace each BatchNorm subclass by plain BatchNorm and the modules it applies after it
    (``_BatchNormThen``) where that is what it computes; report and warn about the others."""
    unknown = []
    for name, module in list(model.named_modules()):
        if not name or not isinstance(module, _BatchNorm) or type(module) in _PLAIN_BATCHNORMS:
            continue
        split = _split_batchnorm(module)
        if split is None:
            unknown.append(f"{name} ({type(module).__name__})")
            report.left[name] = (
                f"{type(module).__name__}: a BatchNorm subclass fuse_for_inference does not understand (its forward "
                "is not BatchNorm then its .drop/.act modules); it runs as it is and is not folded"
            )
        else:
            model.set_submodule(name, split)
    if unknown:
        warnings.warn(
            f"fuse_for_inference(): left alone the BatchNorm subclasses it does not understand, so the "
            f"convolutions before them are not folded: {', '.join(unknown)}",
            stacklevel=3,
        )


class _BatchNormThen(nn.Sequential):
    """A BatchNorm subclass taken apart: ``bn`` (a plain torch BatchNorm), then ``drop``, ``act``."""


def _split_batchnorm(module: _BatchNorm) -> nn.Module | None:
    """``module`` as plain BatchNorm (then its ``drop`` and ``act``), or None if it computes something else."""
    base = next((cls for cls in type(module).__mro__ if cls in _PLAIN_BATCHNORMS), None)
    if base is None:
        return None
    plain = base(
        module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats, device="meta"
    )
    # The same Parameter and buffer objects: the model is already a copy.
    plain._parameters = {key: module._parameters[key] for key in plain._parameters}
    plain._buffers = {key: module._buffers[key] for key in plain._buffers}
    plain.train(module.training)
    if type(module).forward is base.forward:
        return plain
    if not isinstance(module._modules.get("act"), nn.Module):
        return None
    parts = OrderedDict(bn=plain)
    parts.update(
        (key, module._modules[key]) for key in ("drop", "act") if isinstance(module._modules.get(key), nn.Module)
    )
    split = _BatchNormThen(parts)
    return split if _computes_the_same(module, split, _PLAIN_BATCHNORMS[base]) else None


def _computes_the_same(module: nn.Module, candidate: nn.Module, spatial_rank: int) -> bool:
    """Whether float64 CPU copies of the two give the same output on a random input (a probe)."""
    try:
        pair = copy.deepcopy(nn.ModuleList([module, candidate])).to("cpu", torch.float64)
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(2, module.num_features, *[5] * spatial_rank, dtype=torch.float64, generator=generator)
        with torch.no_grad():
            expected, got = pair[0](x.clone()), pair[1](x.clone())
    except Exception:  # a module that cannot be copied or probed is not understood
        return False
    return isinstance(expected, torch.Tensor) and torch.allclose(got, expected, rtol=1e-12, atol=1e-12)


def _count_what_is_left(fused: nn.Module, report: FusionReport) -> None:
    """Count the result's triton_conv convolutions; list its BatchNorms and torch convolutions."""
    conversion = conversion_report(fused)
    report.convolutions = len(conversion.converted)
    report.left.update(conversion.left)
    for name, module in fused.named_modules():
        if isinstance(module, _BatchNorm) and name not in report.left:
            report.left[name] = f"{type(module).__name__}: {_BATCHNORM_LEFT}"


class _FusedGraphModule(fx.GraphModule):
    """A GraphModule whose deep copies keep its ``fusion_report`` (GraphModule's own copy drops
    attributes it does not know)."""

    def __deepcopy__(self, memo: dict) -> fx.GraphModule:
        copied = super().__deepcopy__(memo)
        copied.fusion_report = copy.deepcopy(self.fusion_report, memo)
        return copied


class _ConvLeafTracer(fx.Tracer):
    """Keeps every conv module a single node, triton_conv's included (its forward is not traceable),
    and every BatchNorm left unsplit, so that it stays one module call to report."""

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return isinstance(module, ConvModule | _BatchNorm) or super().is_leaf_module(module, qualified_name)


def _fuse_chain(graph_module: fx.GraphModule, conv_node: fx.Node, report: FusionReport) -> None:
    """Replace conv [-> BN] [-> add] [-> activation] from ``conv_node`` by one fused module call."""
    conv = graph_module.get_submodule(conv_node.target)
    # Already fused (residual passed or activation set), or shared: its weights are not ours to fold.
    if len(conv_node.args) != 1 or conv_node.kwargs or getattr(conv, "activation", None) is not None:
        return
    if _uses_of(graph_module, conv_node.target) > 1:
        return

    chain = [conv_node]
    bn = residual = activation = None
    skipped, user = _next_link(graph_module, chain[-1])
    if user is not None and user.op == "call_module" and user.args == (chain[-1] if not skipped else skipped[-1],):
        module = graph_module.get_submodule(user.target)
        why_not = _why_not_foldable(module, conv) if isinstance(module, _BatchNorm) else "not a BatchNorm"
        if why_not is None and not user.kwargs:
            bn = module
            chain += [*skipped, user]
        elif isinstance(module, _BatchNorm) and user.target not in report.left:
            report.left[user.target] = f"{type(module).__name__}: {why_not}"
    skipped, user = _next_link(graph_module, chain[-1])
    if user is not None and (residual := _residual_of(user, skipped[-1] if skipped else chain[-1])) is not None:
        chain += [*skipped, user]
    skipped, user = _next_link(graph_module, chain[-1])
    if user is not None and (activation := _activation_of(graph_module, user, skipped[-1] if skipped else chain[-1])):
        chain += [*skipped, user]
    elif user is not None and user.op == "call_module":
        _report_unfused_activation(graph_module.get_submodule(user.target), user.target, report)
    if len(chain) == 1:
        return

    fused = fold_batchnorm(conv, bn) if bn is not None else convert_model(conv)
    fused.activation = activation
    report.batchnorms_folded += bn is not None
    report.residual_adds_fused += residual is not None
    if activation is not None:
        report.activations_fused[activation] += 1
    graph_module.add_submodule(conv_node.target, fused)
    last = chain[-1]
    # At the last link's place: the residual may be computed after the convolution.
    with graph_module.graph.inserting_before(last):
        kwargs = {"residual": residual} if residual is not None else {}
        new_node = graph_module.graph.call_module(conv_node.target, conv_node.args, kwargs)
    new_node.meta = dict(last.meta)  # later chains read this node's shape
    last.replace_all_uses_with(new_node)
    for node in reversed(chain):
        graph_module.graph.erase_node(node)


def _next_link(graph_module: fx.GraphModule, node: fx.Node) -> tuple[list[fx.Node], fx.Node | None]:
    """The pass-through module calls after ``node`` (each the only user of the one before), and
    the only user after them (None if there is not exactly one)."""
    skipped: list[fx.Node] = []
    user = _only_user(node)
    while (
        user is not None
        and user.op == "call_module"
        and user.args == (node,)
        and not user.kwargs
        and type(graph_module.get_submodule(user.target)) in _PASS_THROUGH
    ):
        skipped.append(user)
        node, user = user, _only_user(user)
    return skipped, user


def _report_unfused_activation(module: nn.Module, name: str, report: FusionReport) -> None:
    """Note an activation module right after a chain that the epilogue does not compute."""
    if type(module).__module__ == "torch.nn.modules.activation" and name not in report.left:
        report.left[name] = (
            f"{type(module).__name__}: not an activation the epilogue computes ({', '.join(ACTIVATIONS)}); "
            "it runs after the convolution"
        )


def _only_user(node: fx.Node) -> fx.Node | None:
    return next(iter(node.users)) if len(node.users) == 1 else None


def _uses_of(graph_module: fx.GraphModule, target: str) -> int:
    """Nodes calling the module ``target`` or reading its parameters."""
    return sum(
        1
        for node in graph_module.graph.nodes
        if node.op in ("call_module", "get_attr") and (node.target == target or node.target.startswith(target + "."))
    )


def _why_not_foldable(bn: _BatchNorm, conv: ConvModule) -> str | None:
    """Why ``bn`` cannot be folded into ``conv`` before it, or None if it can."""
    if type(bn) not in _PLAIN_BATCHNORMS:
        return "a BatchNorm subclass fuse_for_inference does not understand"
    if bn.running_mean is None or bn.running_var is None:
        return "normalizes with each batch's statistics (track_running_stats=False), so it cannot be folded"
    if bn.num_features != conv.out_channels:
        return f"num_features {bn.num_features} differs from the convolution's {conv.out_channels} output channels"
    return None


def _residual_of(add: fx.Node, value: fx.Node) -> fx.Node | None:
    """The other operand of ``add`` if it is ``value`` plus a tensor of ``value``'s shape and dtype."""
    is_add = (add.op == "call_function" and add.target in _ADD_FUNCTIONS) or (
        add.op == "call_method" and add.target in ("add", "add_")
    )
    # kwargs would be alpha= or out=, which the epilogue does not do.
    if not is_add or len(add.args) != 2 or add.kwargs or add.args.count(value) != 1:
        return None
    other = add.args[1] if add.args[0] is value else add.args[0]
    if not isinstance(other, fx.Node) or (add.op == "call_method" and add.args[0] is not value):
        return None  # a scalar, or other.add_(value), which writes into other
    # Shapes from ShapeProp: the epilogue adds an output-shaped tensor and does not broadcast.
    mine, theirs = value.meta.get("tensor_meta"), other.meta.get("tensor_meta")
    if mine is None or not hasattr(theirs, "shape"):
        return None
    return other if (theirs.shape, theirs.dtype) == (mine.shape, mine.dtype) else None


def _activation_of(graph_module: fx.GraphModule, node: fx.Node, value: fx.Node) -> str | None:
    """The epilogue name of ``node`` if it is a fusible activation applied to ``value``."""
    if not node.args or node.args[0] is not value:
        return None
    if node.op == "call_module":
        return _module_activation(graph_module.get_submodule(node.target)) if len(node.args) == 1 else None
    if node.op == "call_function":
        name = _ACTIVATION_FUNCTIONS.get(node.target)
    elif node.op == "call_method":
        name = _ACTIVATION_METHODS.get(node.target)
    else:
        return None
    # Only an ``inplace`` flag may come with the input, or gelu's exact (default) form.
    extras_ok = all(isinstance(arg, bool) for arg in node.args[1:]) and all(
        (key == "inplace" and isinstance(arg, bool)) or (key == "approximate" and arg == "none")
        for key, arg in node.kwargs.items()
    )
    return name if extras_ok else None


def _module_activation(module: nn.Module) -> str | None:
    name = _ACTIVATION_MODULES.get(type(module))
    return None if name == "gelu" and module.approximate != "none" else name


def _fuse_sequentials(model: nn.Module, report: FusionReport) -> nn.Module:
    """The fallback: fuse Conv -> BatchNorm -> activation runs inside ``nn.Sequential`` containers,
    a nested Sequential (or a split BatchNorm) read as part of the run around it.

    Fused-away modules become ``nn.Identity`` so that the other children keep their names.
    """
    names = {id(module): name for name, module in model.named_modules()}
    containers = [m for m in model.modules() if type(m) in (nn.Sequential, _BatchNormThen)]
    nested = {id(child) for container in containers for child in container.children()}
    for sequential in (m for m in containers if id(m) not in nested):
        run = list(_flattened(sequential))
        i = 0
        while i < len(run):
            conv = run[i][2]
            if type(conv) not in _FUSIBLE_CONVS or getattr(conv, "activation", None) is not None:
                i += 1
                continue
            absorbed = []
            j = _after_pass_through(run, i + 1)
            bn = run[j][2] if j < len(run) and isinstance(run[j][2], _BatchNorm) else None
            if bn is not None and (why_not := _why_not_foldable(bn, conv)) is not None:
                report.left.setdefault(names[id(bn)], f"{type(bn).__name__}: {why_not}")
                bn = None
            if bn is not None:
                absorbed.append(j)
                j = _after_pass_through(run, j + 1)
            activation = _module_activation(run[j][2]) if j < len(run) else None
            if activation is not None:
                absorbed.append(j)
            elif j < len(run):
                _report_unfused_activation(run[j][2], names[id(run[j][2])], report)
            fused = fold_batchnorm(conv, bn) if bn is not None else convert_model(conv)
            fused.activation = activation
            report.batchnorms_folded += bn is not None
            if activation is not None:
                report.activations_fused[activation] += 1
            container, name, _ = run[i]
            container._modules[name] = fused
            for k in absorbed:
                container, name, _ = run[k]
                container._modules[name] = nn.Identity()
            i = (absorbed[-1] if absorbed else i) + 1
    return model


def _flattened(sequential: nn.Module) -> Iterator[tuple[nn.Module, str, nn.Module]]:
    """(container, name, module) of the leaves of ``sequential``, nested Sequentials opened."""
    for name, module in sequential._modules.items():
        if type(module) in (nn.Sequential, _BatchNormThen):
            yield from _flattened(module)
        elif module is not None:
            yield sequential, name, module


def _after_pass_through(run: list[tuple[nn.Module, str, nn.Module]], start: int) -> int:
    """The first index from ``start`` whose module is not a pass-through."""
    while start < len(run) and type(run[start][2]) in _PASS_THROUGH:
        start += 1
    return start
