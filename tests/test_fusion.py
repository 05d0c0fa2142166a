"""BatchNorm folding and conv + BN + residual + activation fusion, against the eval-mode torch model."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd

import triton_conv
from triton_conv.testing import relative_error

pytestmark = pytest.mark.fusion

CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
BATCHNORM = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
SIZE = {1: (10,), 2: (6, 6), 3: (4, 4, 4)}
TRITON_CONVS = (triton_conv.Conv1d, triton_conv.Conv2d, triton_conv.Conv3d)
BOUND = 1e-10  # float64 throughout


def _input(ndim: int = 2, channels: int = 3) -> torch.Tensor:
    return torch.randn(2, channels, *SIZE[ndim], dtype=torch.float64)


def _randomize_batchnorms(model: nn.Module, stats: bool = True) -> nn.Module:
    """Affine parameters (and running statistics) far from the identity transform."""
    with torch.no_grad():
        for bn in (m for m in model.modules() if isinstance(m, _BatchNorm)):
            if bn.affine:
                bn.weight.uniform_(0.5, 1.5)
                bn.bias.normal_()
            if stats and bn.track_running_stats:
                bn.running_mean.normal_()
                bn.running_var.uniform_(0.5, 2.0)
    return model


def _fused_activations(model: nn.Module) -> list[str]:
    return sorted(m.activation for m in model.modules() if isinstance(m, TRITON_CONVS) and m.activation is not None)


def _count(model: nn.Module, kind: type | tuple[type, ...]) -> int:
    return sum(isinstance(m, kind) for m in model.modules())


def _fuse_and_check(
    model: nn.Module,
    x: torch.Tensor,
    batchnorms_left: int,
    activations: list[str],
    residuals: int | None = None,
) -> nn.Module:
    """Fuse ``model`` and check the result's structure and values, and that ``model`` is untouched."""
    state = {k: v.clone() for k, v in model.state_dict().items()}
    kinds_and_modes = [(type(m), m.training) for m in model.modules()]

    fused = triton_conv.fuse_for_inference(model, (x,))

    assert model.state_dict().keys() == state.keys()
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items()), "the original model's state changed"
    assert [(type(m), m.training) for m in model.modules()] == kinds_and_modes, "the original model's modules changed"
    assert not any(m.training for m in fused.modules()), "the fused model is not in eval mode"
    assert _count(fused, _BatchNorm) == batchnorms_left
    assert _fused_activations(fused) == sorted(activations)
    assert all(isinstance(m, TRITON_CONVS) for m in fused.modules() if isinstance(m, _ConvNd)), "a torch conv is left"
    if residuals is not None:
        calls = [n for n in fused.graph.nodes if n.op == "call_module" and "residual" in n.kwargs]
        assert len(calls) == residuals, f"{len(calls)} convolutions take a residual, expected {residuals}"

    with torch.no_grad():
        expected = model.eval()(x)
        got = fused(x)
    err = relative_error(got, expected)
    assert err < BOUND, f"fused model: relative error {err:.3e} > {BOUND:.0e}"
    return fused


# --- models -----------------------------------------------------------------------------------


class BasicBlock(nn.Module):
    """ResNet's basic block: conv-bn-relu-conv-bn, identity added, relu."""

    def __init__(self, ndim: int, channels: int = 3) -> None:
        super().__init__()
        self.conv1 = CONV[ndim](channels, channels, 3, padding=1, bias=False)
        self.bn1 = BATCHNORM[ndim](channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = CONV[ndim](channels, channels, 3, padding=1, bias=False)
        self.bn2 = BATCHNORM[ndim](channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class Bottleneck(nn.Module):
    """1x1 - strided 3x3 - 1x1 with a conv + bn downsample path on the residual."""

    def __init__(self, cin: int = 3, width: int = 2, cout: int = 4) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = nn.Conv2d(width, width, 3, stride=2, padding=1), nn.BatchNorm2d(width)
        self.conv3, self.bn3 = nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=2, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + self.downsample(x))


class Chain(nn.Module):
    """conv -> bn -> [add(·, input)] -> [activation]; activation and add in any form."""

    def __init__(
        self,
        activation: nn.Module | Callable | None,
        add: Callable | None = None,
        ndim: int = 2,
        channels: int = 3,
        bn: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.conv = CONV[ndim](channels, channels, 3, padding=1)
        self.bn = bn if bn is not None else BATCHNORM[ndim](channels)
        self.activation = activation
        self.add = add

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn(self.conv(x))
        if self.add is not None:
            y = self.add(y, x)
        return self.activation(y) if self.activation is not None else y


def _iadd(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a += b
    return a


# --- fold_batchnorm ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ndim, bias, affine, kwargs",
    [
        (1, False, True, {}),
        (2, True, False, dict(stride=2, groups=3, padding=1, padding_mode="reflect")),
        (3, True, True, dict(dilation=2, padding="same")),
    ],
    ids=["1d-nobias", "2d-noaffine-strided-groups-reflect", "3d-dilated-same"],
)
def test_fold_batchnorm(ndim, bias, affine, kwargs):
    conv = CONV[ndim](3, 6, 3, bias=bias, **kwargs).double()
    bn = _randomize_batchnorms(BATCHNORM[ndim](6, affine=affine).double())
    pair = nn.ModuleDict(dict(conv=conv, bn=bn))
    state = {k: v.clone() for k, v in pair.state_dict().items()}
    folded = triton_conv.fold_batchnorm(conv, bn)
    assert type(folded) is TRITON_CONVS[ndim - 1] and folded is not conv
    assert all(torch.equal(v, state[k]) for k, v in pair.state_dict().items()), "conv or bn changed"
    x = _input(ndim)
    with torch.no_grad():
        err = relative_error(folded(x), bn.eval()(conv(x)))
    assert err < BOUND, f"relative error {err:.3e}"


def test_fold_batchnorm_of_a_triton_conv_keeps_dtype_and_mode():
    conv = triton_conv.Conv2d(3, 4, 3).double().eval()
    folded = triton_conv.fold_batchnorm(conv, _randomize_batchnorms(nn.BatchNorm2d(4).double()))
    assert folded.weight.dtype == folded.bias.dtype == torch.float64 and not folded.training


def test_fold_batchnorm_errors():
    conv = nn.Conv2d(3, 4, 3)
    with pytest.raises(ValueError, match=r"bn.num_features \(5\) must equal conv.out_channels \(4\)"):
        triton_conv.fold_batchnorm(conv, nn.BatchNorm2d(5))
    with pytest.raises(ValueError, match="no running statistics"):
        triton_conv.fold_batchnorm(conv, nn.BatchNorm2d(4, track_running_stats=False))
    with pytest.raises(TypeError, match="conv must be an nn.Conv1d, nn.Conv2d or nn.Conv3d"):
        triton_conv.fold_batchnorm(nn.Linear(3, 4), nn.BatchNorm2d(4))
    with pytest.raises(TypeError, match="bn must be a BatchNorm module"):
        triton_conv.fold_batchnorm(conv, nn.LayerNorm(4))
    fused_conv = triton_conv.Conv2d(3, 4, 3)
    fused_conv.activation = "relu"
    with pytest.raises(ValueError, match="applies activation 'relu'"):
        triton_conv.fold_batchnorm(fused_conv, nn.BatchNorm2d(4))


# --- fuse_for_inference -----------------------------------------------------------------------


@pytest.mark.parametrize("converted", [False, True], ids=["torch", "triton_conv"])
def test_sequential_conv_bn_relu(converted):
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1, bias=False),
        nn.BatchNorm2d(4),
        nn.ReLU(inplace=True),
        nn.Conv2d(4, 2, 3),  # followed by nothing: converted all the same
    )
    model = _randomize_batchnorms(model.double())
    if converted:
        triton_conv.convert_model(model)
    _fuse_and_check(model, _input(), batchnorms_left=0, activations=["relu"], residuals=0)


@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_basic_block(ndim):
    model = _randomize_batchnorms(BasicBlock(ndim).double(), stats=False)
    with torch.no_grad():  # running statistics from a few training-mode batches
        for _ in range(3):
            model(2 * _input(ndim) + 1)
    assert model.training
    _fuse_and_check(model, _input(ndim), batchnorms_left=0, activations=["relu", "relu"], residuals=1)


def test_bottleneck_with_downsample():
    model = _randomize_batchnorms(Bottleneck().double()).eval()
    _fuse_and_check(model, _input(), batchnorms_left=0, activations=["relu"] * 3, residuals=1)


ACTIVATION_FORMS = [
    pytest.param(nn.ReLU(), "relu", id="nn.ReLU"),
    pytest.param(nn.ReLU(inplace=True), "relu", id="nn.ReLU-inplace"),
    pytest.param(nn.ReLU6(), "relu6", id="nn.ReLU6"),
    pytest.param(nn.SiLU(inplace=True), "silu", id="nn.SiLU-inplace"),
    pytest.param(nn.GELU(), "gelu", id="nn.GELU"),
    pytest.param(nn.Sigmoid(), "sigmoid", id="nn.Sigmoid"),
    pytest.param(nn.Tanh(), "tanh", id="nn.Tanh"),
    pytest.param(F.relu, "relu", id="F.relu"),
    pytest.param(lambda t: F.relu(t, inplace=True), "relu", id="F.relu-inplace"),
    pytest.param(torch.relu, "relu", id="torch.relu"),
    pytest.param(torch.relu_, "relu", id="torch.relu_"),
    pytest.param(lambda t: t.relu(), "relu", id="Tensor.relu"),
    pytest.param(lambda t: F.relu6(t, True), "relu6", id="F.relu6-inplace"),
    pytest.param(F.silu, "silu", id="F.silu"),
    pytest.param(lambda t: F.gelu(t, approximate="none"), "gelu", id="F.gelu"),
    pytest.param(F.sigmoid, "sigmoid", id="F.sigmoid"),
    pytest.param(torch.sigmoid, "sigmoid", id="torch.sigmoid"),
    pytest.param(F.tanh, "tanh", id="F.tanh"),
    pytest.param(lambda t: t.tanh_(), "tanh", id="Tensor.tanh_"),
]


@pytest.mark.parametrize("activation, name", ACTIVATION_FORMS)
def test_every_activation_form(activation, name):
    model = _randomize_batchnorms(Chain(activation, ndim=1).double())
    _fuse_and_check(model, _input(1), batchnorms_left=0, activations=[name], residuals=0)


ADD_FORMS = [
    pytest.param(lambda a, b: a + b, id="operator.add"),
    pytest.param(lambda a, b: b + a, id="residual-first"),
    pytest.param(_iadd, id="iadd"),
    pytest.param(torch.add, id="torch.add"),
    pytest.param(lambda a, b: a.add_(b), id="Tensor.add_"),
]


@pytest.mark.parametrize("add", ADD_FORMS)
def test_every_residual_add_form(add):
    model = _randomize_batchnorms(Chain(nn.SiLU(), add, ndim=1).double())
    _fuse_and_check(model, _input(1), batchnorms_left=0, activations=["silu"], residuals=1)


def test_residual_without_activation_3d():
    model = _randomize_batchnorms(Chain(None, torch.add, ndim=3).double())
    _fuse_and_check(model, _input(3), batchnorms_left=0, activations=[], residuals=1)


class SharedOutput(nn.Module):
    """The conv (or BN) output has a second user, so the chain stops there."""

    def __init__(self, after_bn: bool) -> None:
        super().__init__()
        self.conv, self.bn, self.after_bn = nn.Conv1d(3, 3, 3, padding=1), nn.BatchNorm1d(3), after_bn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        z = self.bn(y)
        return torch.relu(z) + (z if self.after_bn else y)


class SharedConv(nn.Module):
    """One conv called twice, each call followed by its own BN: its weights cannot take either."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn1, self.bn2 = nn.Conv1d(3, 3, 3, padding=1), nn.BatchNorm1d(3), nn.BatchNorm1d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.conv(torch.relu(self.bn1(self.conv(x)))))


class BroadcastAdd(nn.Module):
    """An add of a per-channel tensor: not an output-shaped residual."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv1d(3, 3, 3, padding=1), nn.BatchNorm1d(3)
        self.shift = nn.Parameter(torch.randn(1, 3, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.conv(x)) + self.shift)


UNFUSIBLE = [
    # model, BatchNorms left, fused activations, residual calls
    pytest.param(lambda: Chain(nn.GELU(approximate="tanh"), ndim=1), 0, [], 0, id="nn.GELU-tanh"),
    pytest.param(lambda: Chain(lambda t: F.gelu(t, approximate="tanh"), ndim=1), 0, [], 0, id="F.gelu-tanh"),
    pytest.param(lambda: Chain(nn.LeakyReLU(), ndim=1), 0, [], 0, id="unknown-activation"),
    pytest.param(lambda: Chain(F.relu, lambda a, b: torch.add(a, b, alpha=2), ndim=1), 0, [], 0, id="add-alpha"),
    pytest.param(lambda: Chain(F.relu, lambda a, b: a + 1.5, ndim=1), 0, [], 0, id="add-scalar"),
    pytest.param(
        lambda: Chain(nn.ReLU(), ndim=1, bn=nn.BatchNorm1d(3, track_running_stats=False)), 1, [], 0, id="bn-batch-stats"
    ),
    pytest.param(lambda: SharedOutput(after_bn=False), 1, [], 0, id="conv-output-used-twice"),
    pytest.param(lambda: SharedOutput(after_bn=True), 0, [], 0, id="bn-output-used-twice"),
    pytest.param(SharedConv, 2, [], 0, id="conv-called-twice"),
    pytest.param(BroadcastAdd, 0, [], 0, id="broadcast-add"),
]


@pytest.mark.parametrize("make_model, batchnorms_left, activations, residuals", UNFUSIBLE)
def test_unfusible_chains_are_left_as_they_are(make_model, batchnorms_left, activations, residuals):
    model = _randomize_batchnorms(make_model().double())
    _fuse_and_check(model, _input(1), batchnorms_left, activations, residuals)


class DataDependent(nn.Module):
    """fx cannot trace the ``if``; the Sequential runs are fused all the same."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1),
            nn.BatchNorm2d(4),
            nn.ReLU(),
            nn.Conv2d(4, 4, 3, padding=1, bias=False),
            nn.BatchNorm2d(4),
            nn.SiLU(),
            nn.Conv2d(4, 4, 1),
            nn.GELU(approximate="tanh"),  # not fusible
        )
        self.head = nn.Conv2d(4, 2, 1)  # outside any Sequential: converted only

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        if x.sum() > 0:
            y = -y
        return self.head(y)


def test_untraceable_model_falls_back_to_sequentials():
    model = _randomize_batchnorms(DataDependent().double())
    with pytest.warns(UserWarning, match=r"torch.fx cannot trace DataDependent \(.*\); fusing .* nn.Sequential"):
        fused = _fuse_and_check(model, _input(), batchnorms_left=0, activations=["relu", "silu"])
    assert [type(m).__name__ for m in fused.body] == [
        "Conv2d", "Identity", "Identity", "Conv2d", "Identity", "Identity", "Conv2d", "GELU"
    ]  # fmt: skip


# --- timm-style blocks ------------------------------------------------------------------------
# The same structure as timm's layers (timm itself needs a torchvision built for this torch):
# BatchNormAct2d is a BatchNorm2d subclass with its dropout and activation inside, an Identity
# (timm's drop_block, aa, drop_path) may sit between links, and activations may not be fusible.


class BatchNormAct2d(nn.BatchNorm2d):
    """timm.layers.BatchNormAct2d's eval-mode forward: batch_norm, then self.drop, then self.act."""

    def __init__(self, channels: int, act: nn.Module | None = None) -> None:
        super().__init__(channels)
        self.drop = nn.Identity()
        self.act = act if act is not None else nn.Identity()  # timm's apply_act=False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        torch._assert(x.ndim == 4, "expected 4D input")
        x = F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        return self.act(self.drop(x))


class ActBeforeBatchNorm(nn.BatchNorm2d):
    """Has an ``act`` like BatchNormAct2d, but applies it first: must not be taken apart."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(self.act(x))


class ShiftedBatchNorm2d(nn.BatchNorm2d):
    """A BatchNorm subclass with a forward of its own and no ``act``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) + 1.0


class TimmBasicBlock(nn.Module):
    """timm's ResNet BasicBlock: Identity (drop_block, aa) between BatchNorm and activation."""

    def __init__(self, channels: int = 4) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels)
        self.drop_block, self.act1, self.aa = nn.Identity(), nn.ReLU(inplace=True), nn.Identity()
        self.conv2, self.bn2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels)
        self.drop_path, self.act2 = nn.Identity(), nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.aa(self.act1(self.drop_block(self.bn1(self.conv1(x)))))
        x = self.drop_path(self.bn2(self.conv2(x)))
        x += shortcut
        return self.act2(x)


class InvertedResidual(nn.Module):
    """timm's EfficientNet / MobileNetV3 block: BatchNormAct2d throughout, squeeze-excite, skip."""

    def __init__(self, channels: int = 4, act: type[nn.Module] = nn.SiLU, gate: type[nn.Module] = nn.Sigmoid) -> None:
        super().__init__()
        mid = 2 * channels
        self.conv_pw, self.bn1 = nn.Conv2d(channels, mid, 1, bias=False), BatchNormAct2d(mid, act())
        self.conv_dw = nn.Conv2d(mid, mid, 3, padding=1, groups=mid, bias=False)
        self.bn2 = BatchNormAct2d(mid, act())
        self.se_reduce, self.se_act, self.se_expand = nn.Conv2d(mid, 2, 1), act(), nn.Conv2d(2, mid, 1)
        self.gate = gate()
        self.conv_pwl, self.bn3 = nn.Conv2d(mid, channels, 1, bias=False), BatchNormAct2d(channels)
        self.drop_path = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.bn2(self.conv_dw(self.bn1(self.conv_pw(x))))
        x = x * self.gate(self.se_expand(self.se_act(self.se_reduce(x.mean((2, 3), keepdim=True)))))
        return self.drop_path(self.bn3(self.conv_pwl(x))) + shortcut


def _report_counts(model: nn.Module) -> tuple[int, int, dict[str, int], int]:
    report = model.fusion_report
    return report.convolutions, report.batchnorms_folded, dict(report.activations_fused), report.residual_adds_fused


def test_timm_resnet_block_identity_between_batchnorm_and_activation():
    model = _randomize_batchnorms(TimmBasicBlock().double())
    fused = _fuse_and_check(model, _input(channels=4), batchnorms_left=0, activations=["relu", "relu"], residuals=1)
    assert _report_counts(fused) == (2, 2, {"relu": 2}, 1) and fused.fusion_report.left == {}


def test_timm_efficientnet_block_batchnorm_act():
    model = _randomize_batchnorms(InvertedResidual().double())
    fused = _fuse_and_check(
        model, _input(channels=4), batchnorms_left=0, activations=["silu", "silu", "silu", "sigmoid"], residuals=1
    )
    assert _report_counts(fused) == (5, 3, {"silu": 3, "sigmoid": 1}, 1)
    assert fused.fusion_report.traced and fused.fusion_report.left == {}


def test_timm_mobilenetv3_block_keeps_activations_the_epilogue_lacks():
    model = _randomize_batchnorms(InvertedResidual(act=nn.Hardswish, gate=nn.Hardsigmoid).double())
    fused = _fuse_and_check(model, _input(channels=4), batchnorms_left=0, activations=[], residuals=1)
    assert _report_counts(fused) == (5, 3, {}, 1)
    assert _count(fused, nn.Hardswish) == 3 and _count(fused, nn.Hardsigmoid) == 1
    left = fused.fusion_report.left
    assert sorted(left) == ["bn1.act", "bn2.act", "gate", "se_act"], left
    assert all("not an activation the epilogue computes" in why for why in left.values())


class UntraceableBatchNormAct(nn.Module):
    """fx cannot trace the ``if``: only the Sequential is fused, BatchNormAct2d's ReLU included."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1, bias=False),
            BatchNormAct2d(4, nn.ReLU()),
            nn.Conv2d(4, 4, 3, padding=1),
            BatchNormAct2d(4, nn.Hardswish()),
            nn.Sequential(nn.Conv2d(4, 4, 1), nn.Dropout(), BatchNormAct2d(4), nn.Identity(), nn.SiLU()),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return -y if x.sum() > 0 else y


def test_untraceable_model_folds_batchnorm_act_and_keeps_its_activation():
    model = _randomize_batchnorms(UntraceableBatchNormAct().double())
    with pytest.warns(UserWarning, match="torch.fx cannot trace UntraceableBatchNormAct"):
        fused = _fuse_and_check(model, _input(), batchnorms_left=0, activations=["relu", "silu"])
    assert _report_counts(fused) == (3, 3, {"relu": 1, "silu": 1}, 0) and not fused.fusion_report.traced
    assert type(fused.body[3].act) is nn.Hardswish  # folded BatchNorm, activation kept
    assert "not an activation the epilogue computes" in fused.fusion_report.left["body.3.act"]
    assert fused.body[0].activation == "relu"  # BatchNormAct2d's ReLU, fused rather than dropped


@pytest.mark.filterwarnings("ignore:.*torch.fx cannot trace:UserWarning")
@pytest.mark.parametrize("batchnorm", [ActBeforeBatchNorm, ShiftedBatchNorm2d])
@pytest.mark.parametrize("traceable", [True, False], ids=["fx", "sequential"])
def test_batchnorm_subclasses_not_understood_are_left_with_a_warning(batchnorm, traceable):
    model = _randomize_batchnorms(
        nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), batchnorm(4), nn.ReLU()).double()
        if traceable
        else UntraceableWrapper(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), batchnorm(4), nn.ReLU())).double()
    )
    name = "1" if traceable else "inner.1"
    with pytest.warns(UserWarning, match=rf"does not understand.*: {name} \({batchnorm.__name__}\)"):
        fused = _fuse_and_check(model, _input(), batchnorms_left=1, activations=[])
    assert _report_counts(fused) == (1, 0, {}, 0)
    assert "does not understand" in fused.fusion_report.left[name]


class UntraceableWrapper(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x) if x.sum() > 0 else self.inner(-x)


def test_report_says_what_was_left_and_why():
    model = _randomize_batchnorms(SharedConv().double())
    fused = _fuse_and_check(model, _input(1), batchnorms_left=2, activations=[])
    report = fused.fusion_report
    assert _report_counts(fused) == (1, 0, {}, 0)
    assert sorted(report.left) == ["bn1", "bn2"] and "called more than once" in report.left["bn1"]
    text = str(report)
    assert (
        "1 triton_conv convolutions" in text
        and "0 BatchNorms folded" in text
        and "left as it was (bn1, bn2): BatchNorm1d" in text
    )
    assert copy.deepcopy(fused).fusion_report == report
