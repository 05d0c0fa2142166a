"""Inference fusion: fold BatchNorm into the convolution before it, and fuse conv + BN + residual
add + activation into one triton_conv module call (the kernel's epilogue).

``fuse_for_inference`` finds the chains with ``torch.fx``; a model fx cannot trace is fused only
inside its ``nn.Sequential`` containers.
"""

from __future__ import annotations

import copy
import operator
import warnings

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp
from torch.nn.modules.batchnorm import _BatchNorm

from .modules import _TORCH_TO_TRITON, convert_model

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
    Each link must be the only user of the one before. ``example_inputs`` are run once through
    the model to learn which adds are same-shape residuals. Convolutions outside any chain are
    converted to triton_conv as they are. ``model`` itself is not modified.

    The result is a ``torch.fx.GraphModule`` (the traced forward, without the model's other
    methods); where fx cannot trace the model, a copy fused inside its ``nn.Sequential``s only.
    """
    model = copy.deepcopy(model).eval()
    try:
        graph_module = fx.GraphModule(model, _ConvLeafTracer().trace(model), model.__class__.__name__)
    except Exception as error:  # fx raises several types for code it cannot trace
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        warnings.warn(
            f"fuse_for_inference(): torch.fx cannot trace {type(model).__name__} ({reason}); "
            "fusing Conv -> BatchNorm -> activation runs inside nn.Sequential containers only",
            stacklevel=2,
        )
        return convert_model(_fuse_sequentials(model)).eval()

    with torch.no_grad():
        ShapeProp(graph_module).propagate(*example_inputs)
    for node in list(graph_module.graph.nodes):
        if node.op == "call_module" and type(graph_module.get_submodule(node.target)) in _FUSIBLE_CONVS:
            _fuse_chain(graph_module, node)
    graph_module.graph.lint()
    graph_module.delete_all_unused_submodules()
    graph_module.recompile()
    return convert_model(graph_module).eval()


class _ConvLeafTracer(fx.Tracer):
    """Keeps every conv module a single node, triton_conv's included (its forward is not traceable)."""

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return isinstance(module, ConvModule) or super().is_leaf_module(module, qualified_name)


def _fuse_chain(graph_module: fx.GraphModule, conv_node: fx.Node) -> None:
    """Replace conv [-> BN] [-> add] [-> activation] from ``conv_node`` by one fused module call."""
    conv = graph_module.get_submodule(conv_node.target)
    # Already fused (residual passed or activation set), or shared: its weights are not ours to fold.
    if len(conv_node.args) != 1 or conv_node.kwargs or getattr(conv, "activation", None) is not None:
        return
    if _uses_of(graph_module, conv_node.target) > 1:
        return

    chain = [conv_node]
    bn = residual = activation = None
    if (user := _only_user(chain[-1])) is not None and user.op == "call_module" and user.args == (chain[-1],):
        module = graph_module.get_submodule(user.target)
        if _foldable(module, conv) and not user.kwargs:
            bn = module
            chain.append(user)
    if (user := _only_user(chain[-1])) is not None and (residual := _residual_of(user, chain[-1])) is not None:
        chain.append(user)
    if (user := _only_user(chain[-1])) is not None and (activation := _activation_of(graph_module, user, chain[-1])):
        chain.append(user)
    if len(chain) == 1:
        return

    fused = fold_batchnorm(conv, bn) if bn is not None else convert_model(conv)
    fused.activation = activation
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


def _only_user(node: fx.Node) -> fx.Node | None:
    return next(iter(node.users)) if len(node.users) == 1 else None


def _uses_of(graph_module: fx.GraphModule, target: str) -> int:
    """Nodes calling the module ``target`` or reading its parameters."""
    return sum(
        1
        for node in graph_module.graph.nodes
        if node.op in ("call_module", "get_attr") and (node.target == target or node.target.startswith(target + "."))
    )


def _foldable(module: nn.Module, conv: ConvModule) -> bool:
    return (
        isinstance(module, _BatchNorm)
        and module.running_mean is not None
        and module.running_var is not None
        and module.num_features == conv.out_channels
    )


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


def _fuse_sequentials(model: nn.Module) -> nn.Module:
    """The fallback: fuse Conv -> BatchNorm -> activation runs inside ``nn.Sequential`` containers.

    Fused-away modules become ``nn.Identity`` so that the other children keep their names.
    """
    for sequential in [m for m in model.modules() if type(m) is nn.Sequential]:
        names = list(sequential._modules)
        i = 0
        while i < len(names):
            conv = sequential._modules[names[i]]
            following = [sequential._modules[name] for name in names[i + 1 : i + 3]]
            if type(conv) not in _FUSIBLE_CONVS or getattr(conv, "activation", None) is not None:
                i += 1
                continue
            bn = following.pop(0) if following and _foldable(following[0], conv) else None
            activation = _module_activation(following[0]) if following else None
            fused = fold_batchnorm(conv, bn) if bn is not None else convert_model(conv)
            fused.activation = activation
            sequential._modules[names[i]] = fused
            absorbed = (bn is not None) + (activation is not None)
            for name in names[i + 1 : i + 1 + absorbed]:
                sequential._modules[name] = nn.Identity()
            i += 1 + absorbed
    return model
