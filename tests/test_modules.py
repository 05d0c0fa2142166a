"""``triton_conv.Conv1d/2d/3d`` as drop-ins for torch's modules, and in-place model conversion."""

from __future__ import annotations

import copy
import inspect
import io

import pytest
import torch
from torch import nn

import triton_conv
from triton_conv.modules import _TritonConvMixin
from triton_conv.testing import relative_error

from .reference import DEVICE

pytestmark = pytest.mark.modules

TORCH_MODULE = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
OUR_MODULE = {1: triton_conv.Conv1d, 2: triton_conv.Conv2d, 3: triton_conv.Conv3d}
TORCH_FUNCTIONAL = {1: "conv1d", 2: "conv2d", 3: "conv3d"}
F64 = dict(dtype=torch.float64, device=DEVICE)
TOL = 1e-10  # float64 relative error bound


def _check_close(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    err = relative_error(actual, expected)
    assert err < TOL, f"{what}: relative error {err:.3e} >= {TOL:.0e}"


def _outputs_and_grads(model: nn.Module, x: torch.Tensor, seed: int = 1) -> dict[str, torch.Tensor]:
    """The output, the input gradient and every parameter gradient of a random linear loss."""
    x = x.detach().clone().requires_grad_(True)
    out = model(x)
    cotangent = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    loss = (out * cotangent.to(out.device)).sum()
    names, params = zip(*[(n, p) for n, p in model.named_parameters() if p.requires_grad])
    grads = torch.autograd.grad(loss, [x, *params])
    return {"output": out.detach(), "input.grad": grads[0], **{f"{n}.grad": g for n, g in zip(names, grads[1:])}}


def _check_same_results(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert actual.keys() == expected.keys()
    for name in expected:
        _check_close(actual[name], expected[name], name)


def _convs(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d))]


def disable_torch_conv(monkeypatch) -> None:
    """Make torch's functional convolutions (what ``nn.Conv*`` call) raise: what runs after doesn't use them."""

    def fail(*args, **kwargs):
        raise AssertionError("torch.nn.functional convolution called")

    for name in TORCH_FUNCTIONAL.values():
        monkeypatch.setattr(torch.nn.functional, name, fail)


# ---------------------------------------------------------------------------------------------
# The modules against torch's

# (ndim, constructor kwargs, input shape): every padding mode in every dimensionality, groups,
# dilation, depthwise, stride, 'same'/'valid', no bias.
MODULE_CASES = [
    (1, dict(in_channels=3, out_channels=4, kernel_size=3), (2, 3, 9)),
    (1, dict(in_channels=4, out_channels=6, kernel_size=3, stride=2, padding=2, dilation=2, groups=2,
             padding_mode="reflect"), (2, 4, 11)),
    (1, dict(in_channels=4, out_channels=4, kernel_size=4, padding="same", groups=4, bias=False,
             padding_mode="circular"), (2, 4, 8)),
    (1, dict(in_channels=2, out_channels=3, kernel_size=2, padding=1, padding_mode="replicate"), (2, 2, 7)),
    (2, dict(in_channels=3, out_channels=4, kernel_size=3, padding=1), (2, 3, 6, 7)),
    (2, dict(in_channels=4, out_channels=6, kernel_size=(2, 3), padding="same", dilation=(2, 1), groups=2,
             padding_mode="replicate"), (2, 4, 7, 6)),
    (2, dict(in_channels=3, out_channels=3, kernel_size=3, stride=2, padding=1, groups=3,
             padding_mode="reflect"), (2, 3, 7, 7)),
    (2, dict(in_channels=3, out_channels=4, kernel_size=(3, 2), padding="valid", bias=False), (2, 3, 6, 5)),
    (2, dict(in_channels=2, out_channels=4, kernel_size=3, padding=(1, 2), dilation=(1, 2),
             padding_mode="circular"), (2, 2, 5, 6)),
    (3, dict(in_channels=2, out_channels=4, kernel_size=3, padding=1), (2, 2, 4, 5, 4)),
    (3, dict(in_channels=4, out_channels=4, kernel_size=(1, 3, 3), padding="same", groups=4,
             padding_mode="replicate"), (2, 4, 3, 5, 4)),
    (3, dict(in_channels=2, out_channels=3, kernel_size=2, stride=(1, 2, 1), padding=1, dilation=(2, 1, 1),
             bias=False, padding_mode="reflect"), (2, 2, 5, 5, 4)),
    (3, dict(in_channels=4, out_channels=2, kernel_size=(2, 2, 3), padding="same", groups=2,
             padding_mode="circular"), (2, 4, 3, 4, 4)),
]  # fmt: skip


def _case_id(case) -> str:
    ndim, kwargs, _ = case
    extras = [f"{k}={v}" for k, v in kwargs.items() if k not in ("in_channels", "out_channels", "kernel_size")]
    return f"{ndim}d-" + ",".join(extras).replace(" ", "")


def _pair(ndim: int, kwargs: dict, seed: int = 123) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(seed)
    theirs = TORCH_MODULE[ndim](**kwargs, **F64)
    torch.manual_seed(seed)
    ours = OUR_MODULE[ndim](**kwargs, **F64)
    return ours, theirs


@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_same_constructor_signature_and_defaults(ndim):
    assert inspect.signature(OUR_MODULE[ndim]) == inspect.signature(TORCH_MODULE[ndim])
    torch.manual_seed(0)
    theirs = TORCH_MODULE[ndim](2, 4, 3)
    torch.manual_seed(0)
    ours = OUR_MODULE[ndim](2, 4, 3)
    for attr in ("stride", "padding", "dilation", "groups", "padding_mode", "kernel_size", "output_padding"):
        assert getattr(ours, attr) == getattr(theirs, attr), attr
    assert ours.weight.dtype == theirs.weight.dtype and ours.weight.device == theirs.weight.device
    assert torch.equal(ours.weight, theirs.weight) and torch.equal(ours.bias, theirs.bias)
    assert ours.training and isinstance(ours.weight, nn.Parameter)


@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_same_constructor_errors(ndim):
    for kwargs in (dict(padding="same", stride=2), dict(padding_mode="bogus"), dict(groups=3), dict(padding="full")):
        with pytest.raises(ValueError) as theirs:
            TORCH_MODULE[ndim](4, 4, 3, **kwargs)
        with pytest.raises(ValueError) as ours:
            OUR_MODULE[ndim](4, 4, 3, **kwargs)
        assert str(ours.value) == str(theirs.value)


@pytest.mark.parametrize("case", MODULE_CASES, ids=_case_id)
def test_module_matches_torch(case, monkeypatch):
    ndim, kwargs, shape = case
    ours, theirs = _pair(ndim, kwargs)

    # Same initialisation, types, repr, state_dict.
    assert isinstance(ours, TORCH_MODULE[ndim]) and isinstance(ours, _TritonConvMixin)
    assert type(ours).__name__ == type(theirs).__name__
    assert ours.extra_repr() == theirs.extra_repr()
    assert repr(ours) == repr(theirs)  # same class name too: Conv2d(...)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    for (name, p), (tname, tp) in zip(ours.named_parameters(), theirs.named_parameters()):
        assert name == tname and torch.equal(p, tp), name
    assert ours.bias is None if not kwargs.get("bias", True) else ours.bias is not None

    # Outputs and gradients (input, weight, bias) in float64.
    x = torch.randn(shape, **F64)
    expected = _outputs_and_grads(theirs, x)
    disable_torch_conv(monkeypatch)
    _check_same_results(_outputs_and_grads(ours, x), expected)


@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_load_state_dict_from_torch_module(ndim):
    kwargs = dict(in_channels=2, out_channels=3, kernel_size=2, padding=1, padding_mode="reflect")
    torch.manual_seed(1)
    theirs = TORCH_MODULE[ndim](**kwargs, **F64)
    torch.manual_seed(2)
    ours = OUR_MODULE[ndim](**kwargs, **F64)
    assert not torch.equal(ours.weight, theirs.weight)
    weight = ours.weight
    ours.load_state_dict(theirs.state_dict())
    assert ours.weight is weight  # loaded in place
    assert torch.equal(ours.weight, theirs.weight) and torch.equal(ours.bias, theirs.bias)
    x = torch.randn(2, 2, *[5] * ndim, **F64)
    _check_close(ours(x), theirs(x), "output")
    # And the other way round.
    back = TORCH_MODULE[ndim](**kwargs, **F64)
    back.load_state_dict(ours.state_dict())
    assert torch.equal(back.weight, ours.weight)


def test_unbatched_input(monkeypatch):
    ours, theirs = _pair(2, dict(in_channels=2, out_channels=3, kernel_size=3, padding=1, padding_mode="circular"))
    x = torch.randn(2, 5, 6, **F64)
    expected = _outputs_and_grads(theirs, x)
    disable_torch_conv(monkeypatch)
    _check_same_results(_outputs_and_grads(ours, x), expected)


# ---------------------------------------------------------------------------------------------
# Whole models built from torch's modules, before and after conversion


class _Block1d(nn.Module):
    """A custom module around a Sequential and a ModuleList."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv1d(3, 4, 3, padding=1, padding_mode="reflect"),
            nn.Tanh(),
            nn.Conv1d(4, 4, 3, padding="same", dilation=2, groups=2, padding_mode="circular"),
        )
        self.branches = nn.ModuleList(
            [
                nn.Conv1d(4, 4, 3, padding=1, groups=4, padding_mode="replicate"),  # depthwise
                nn.Conv1d(4, 4, 2, stride=2, padding="valid", bias=False),
            ]
        )

    def forward(self, x):
        y = self.stem(x)
        y = torch.tanh(self.branches[0](y) + y)
        return self.branches[1](y)


class _Net2d(nn.Module):
    """Sequential inside a custom module, a ModuleDict, BatchNorm buffers, a transposed conv and a Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1, bias=False),  # a bias before BatchNorm would get a zero gradient
            nn.BatchNorm2d(4),
            nn.ReLU(),
            nn.Conv2d(4, 4, 3, padding=2, dilation=2, padding_mode="reflect"),
        )
        self.blocks = nn.ModuleDict(
            {
                "depthwise": nn.Conv2d(4, 4, 3, padding=1, groups=4, padding_mode="replicate"),
                "grouped": nn.Conv2d(4, 6, (2, 3), padding="same", groups=2, padding_mode="circular", bias=False),
            }
        )
        self.up = nn.ConvTranspose2d(6, 2, 2, stride=2)
        self.head = nn.Linear(2, 3)

    def forward(self, x):
        y = self.features(x)
        y = torch.relu(self.blocks["depthwise"](y)) + y
        y = self.blocks["grouped"](y)
        return self.head(self.up(y).mean(dim=(2, 3)))


def _net3d() -> nn.Module:
    return nn.Sequential(
        nn.Conv3d(2, 4, 3, padding=1, padding_mode="circular"),
        nn.ReLU(),
        nn.Sequential(
            nn.Conv3d(4, 4, (1, 3, 3), padding="same", dilation=(1, 2, 1), groups=4, padding_mode="reflect"),
            nn.Tanh(),
            nn.Conv3d(4, 4, 2, stride=(1, 2, 2), padding=1, groups=2, padding_mode="replicate"),
        ),
        nn.Conv3d(4, 2, 1, bias=False),
    )


MODELS = {
    "1d": (_Block1d, (2, 3, 10)),
    "2d": (_Net2d, (2, 3, 6, 6)),
    "3d": (_net3d, (2, 2, 4, 5, 4)),
}


def _build(name: str) -> tuple[nn.Module, torch.Tensor]:
    make, shape = MODELS[name]
    torch.manual_seed(7)
    model = make().to(**F64)
    return model, torch.randn(shape, **F64)


@pytest.mark.parametrize("name", list(MODELS))
def test_converted_model_matches_torch_model(name, monkeypatch):
    model, x = _build(name)
    expected = _outputs_and_grads(model, x)
    places = list(model.named_modules())
    convs = _convs(model)

    assert triton_conv.convert_model(model) is model
    assert list(model.named_modules()) == places  # the same module objects in the same places
    assert len(convs) >= 4 and all(type(m) is OUR_MODULE[m.weight.dim() - 2] for m in convs)
    disable_torch_conv(monkeypatch)
    _check_same_results(_outputs_and_grads(model, x), expected)


# ---------------------------------------------------------------------------------------------
# What convert_model keeps


def test_convert_keeps_parameters_buffers_and_settings():
    model, _ = _build("2d")
    model.eval()
    model.blocks.train()  # mixed modes are kept module by module
    modules = dict(model.named_modules())
    params = dict(model.named_parameters())
    buffers = dict(model.named_buffers())
    buffer_values = {n: b.clone() for n, b in buffers.items()}
    modes = {n: m.training for n, m in modules.items()}
    frozen = model.features[3].weight.requires_grad_(False)

    assert triton_conv.convert_model(model) is model
    assert dict(model.named_modules()) == modules
    assert all(model.get_parameter(n) is p for n, p in params.items()) and len(list(model.parameters())) == len(params)
    assert all(model.get_buffer(n) is b and torch.equal(b, buffer_values[n]) for n, b in buffers.items())
    assert {n: m.training for n, m in model.named_modules()} == modes
    assert not model.training and model.blocks["depthwise"].training
    assert not frozen.requires_grad
    assert all(p.dtype == torch.float64 and p.device.type == torch.device(DEVICE).type for p in model.parameters())
    for name, module in model.named_modules():
        assert not isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) or type(module) is triton_conv.Conv2d, name
    assert type(model.up) is triton_conv.ConvTranspose2d and type(model.head) is nn.Linear
    assert type(model.features[1]) is nn.BatchNorm2d and type(model) is _Net2d

    # Still an ordinary module afterwards: dtype and mode changes apply to the converted modules.
    model.train().float()
    assert model.features[0].training and model.features[0].weight.dtype == torch.float32
    assert type(model.features[0]) is triton_conv.Conv2d


def test_convert_twice_and_revert():
    model, x = _build("1d")
    expected = _outputs_and_grads(model, x)
    params = list(model.parameters())
    triton_conv.convert_model(model)
    triton_conv.convert_model(model)  # idempotent
    assert all(type(m) is triton_conv.Conv1d for m in _convs(model))

    assert triton_conv.revert_model(model) is model
    assert all(type(m) is nn.Conv1d for m in _convs(model))
    assert all(p is q for p, q in zip(model.parameters(), params, strict=True))
    _check_same_results(_outputs_and_grads(model, x), expected)


@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_convert_bare_conv_module(ndim, monkeypatch):
    torch.manual_seed(3)
    conv = TORCH_MODULE[ndim](2, 4, 3, padding=1, padding_mode="reflect", **F64)
    x = torch.randn(2, 2, *[5] * ndim, **F64)
    expected = _outputs_and_grads(conv, x)
    weight = conv.weight
    assert triton_conv.convert_model(conv) is conv
    assert type(conv) is OUR_MODULE[ndim] and conv.weight is weight
    disable_torch_conv(monkeypatch)
    _check_same_results(_outputs_and_grads(conv, x), expected)


def test_optimizer_built_before_conversion_steps_converted_model():
    model, x = _build("1d")
    twin = copy.deepcopy(model)  # stays torch's
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.01)
    twin_optimizer = torch.optim.SGD(twin.parameters(), lr=0.1, momentum=0.9, weight_decay=0.01)
    before = [p.detach().clone() for p in model.parameters()]
    triton_conv.convert_model(model)

    for m, opt in ((model, optimizer), (twin, twin_optimizer)):
        for _ in range(2):
            opt.zero_grad()
            m(x).square().mean().backward()
            opt.step()
    for (name, p), q, old in zip(model.named_parameters(), twin.parameters(), before):
        assert relative_error(p.detach(), old) > 1e-3, f"{name} did not change"
        _check_close(p.detach(), q.detach(), name)


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def pre(self, module, args):
        self.calls.append("pre")
        return (args[0] * 2,)  # a pre hook that changes the input still takes effect

    def post(self, module, args, output):
        self.calls.append("post")
        return output + 1  # so does a hook that changes the output


def test_hooks_still_fire():
    model, x = _build("1d")
    recorder = _Recorder()
    conv = model.stem[0]
    conv.register_forward_pre_hook(recorder.pre)
    conv.register_forward_hook(recorder.post)
    seen = []
    model.register_forward_hook(lambda m, args, out: seen.append(out.detach()))
    expected = _outputs_and_grads(model, x)
    assert recorder.calls == ["pre", "post"] and len(seen) == 1

    triton_conv.convert_model(model)
    _check_same_results(_outputs_and_grads(model, x), expected)
    assert recorder.calls == ["pre", "post"] * 2 and len(seen) == 2
    _check_close(seen[1], seen[0], "output seen by the model's hook")


def test_state_dict_saved_before_conversion_loads_after():
    model, x = _build("2d")
    saved = copy.deepcopy(model.state_dict())
    expected = _outputs_and_grads(model.eval(), x)
    triton_conv.convert_model(model)
    assert list(model.state_dict()) == list(saved)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    model.load_state_dict(saved)
    _check_same_results(_outputs_and_grads(model, x), expected)


def test_deepcopy_and_pickle_converted_model():
    model, x = _build("2d")
    triton_conv.convert_model(model)
    expected = _outputs_and_grads(model, x)

    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    for clone in (copy.deepcopy(model), torch.load(buffer, weights_only=False)):
        assert all(type(a) is type(b) for a, b in zip(clone.modules(), model.modules(), strict=True))
        assert all(p is not q and torch.equal(p, q) for p, q in zip(clone.parameters(), model.parameters()))
        _check_same_results(_outputs_and_grads(clone, x), expected)


# ---------------------------------------------------------------------------------------------
# Subclasses of torch's modules


class ScaledConv2d(nn.Conv2d):
    """A user's subclass (module level, so that it pickles) with its own attribute and forward."""

    def __init__(self, *args, scale: float = 2.0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.scale = scale
        self.calls = 0

    def forward(self, input):
        self.calls += 1
        return super().forward(input) * self.scale


def test_subclass_left_alone_by_default():
    model = nn.Sequential(ScaledConv2d(2, 3, 3, **F64), nn.ConvTranspose2d(3, 2, 2, **F64), nn.Linear(2, 2, **F64))
    triton_conv.convert_model(model)
    assert [type(m) for m in model] == [ScaledConv2d, triton_conv.ConvTranspose2d, nn.Linear]


def test_subclass_converted_when_asked(monkeypatch):
    torch.manual_seed(5)
    model = nn.Sequential(
        ScaledConv2d(2, 4, 3, padding=1, padding_mode="reflect", groups=2, scale=3.0, **F64),
        nn.ConvTranspose2d(4, 2, 2, **F64),
        nn.Conv2d(2, 2, 1, **F64),
    )
    x = torch.randn(2, 2, 5, 5, **F64)
    expected = _outputs_and_grads(model, x)
    params = list(model.parameters())

    triton_conv.convert_model(model, include_subclasses=True)
    scaled = model[0]
    assert (
        isinstance(scaled, ScaledConv2d) and isinstance(scaled, _TritonConvMixin) and type(scaled) is not ScaledConv2d
    )
    assert type(model[1]) is triton_conv.ConvTranspose2d and type(model[2]) is triton_conv.Conv2d
    assert scaled.scale == 3.0 and scaled.calls == 1 and all(p is q for p, q in zip(model.parameters(), params))
    # Its forward still runs, and the convolution inside it is triton_conv's (torch's now raises).
    disable_torch_conv(monkeypatch)
    _check_same_results(_outputs_and_grads(model, x), expected)
    assert scaled.calls == 2

    # Converting again reuses the class; deepcopy and pickling keep it; revert gives the user's class.
    other = triton_conv.convert_model(ScaledConv2d(2, 2, 1), include_subclasses=True)
    assert type(other) is type(scaled)
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    for clone in (copy.deepcopy(model), torch.load(buffer, weights_only=False)):
        assert type(clone[0]) is type(scaled) and clone[0].scale == 3.0
        _check_same_results(_outputs_and_grads(clone, x), expected)
    triton_conv.revert_model(model)
    assert [type(m) for m in model] == [ScaledConv2d, nn.ConvTranspose2d, nn.Conv2d]
    assert all(p is q for p, q in zip(model.parameters(), params))


# Subclasses whose own forward calls F.conv2d (timm's Conv2dSame and StdConv2d do) or a
# lower-level convolution that triton_conv cannot route.


class SamePadConv2d(nn.Conv2d):
    """timm's Conv2dSame: pads for TensorFlow's 'SAME' itself, then calls F.conv2d."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad_h = max((-(-x.shape[-2] // self.stride[0]) - 1) * self.stride[0] + self.kernel_size[0] - x.shape[-2], 0)
        pad_w = max((-(-x.shape[-1] // self.stride[1]) - 1) * self.stride[1] + self.kernel_size[1] - x.shape[-1], 0)
        x = torch.nn.functional.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return torch.nn.functional.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class StandardizedConv2d(nn.Conv2d):
    """timm's StdConv2d: standardizes its weight, then calls F.conv2d."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = self.weight.reshape(1, self.out_channels, -1)
        weight = torch.nn.functional.batch_norm(flat, None, None, training=True, momentum=0.0, eps=1e-6)
        return torch.nn.functional.conv2d(
            x, weight.reshape_as(self.weight), self.bias, self.stride, self.padding, self.dilation, self.groups
        )


class RawConvolution2d(nn.Conv2d):
    """Calls torch.convolution, which has no triton_conv twin."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.convolution(x, self.weight, self.bias, self.stride, self.padding, self.dilation, False, [0, 0], 1)


class _CountOps(torch.utils._python_dispatch.TorchDispatchMode):
    """Counts the ops dispatched below autograd: triton_conv's custom ops and aten's convolution."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: dict[str, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func.overloadpacket)
        self.counts[name] = self.counts.get(name, 0) + 1
        return func(*args, **(kwargs or {}))


def test_subclasses_calling_functional_conv_run_triton_conv():
    model = nn.Sequential(
        SamePadConv2d(2, 4, 3, stride=2, **F64),
        StandardizedConv2d(4, 3, 3, padding=1, **F64),
        nn.Conv2d(3, 2, 1, **F64),
    )
    x = torch.randn(2, 2, 7, 7, **F64)
    expected = _outputs_and_grads(model, x)
    triton_conv.convert_model(model, include_subclasses=True)
    with _CountOps() as ops:
        _check_same_results(_outputs_and_grads(model, x), expected)
    # Three forwards and three weight gradients, none of them aten's.
    assert ops.counts.get("aten.convolution", 0) == ops.counts.get("aten.convolution_backward", 0) == 0, ops.counts
    assert (ops.counts["triton_conv.conv_forward"], ops.counts["triton_conv.conv_weight_grad"]) == (3, 3)
    report = triton_conv.conversion_report(model)
    assert list(report.converted) == ["0", "1", "2"] and report.left == {}
    assert "SamePadConv2d (its own forward, whose F.conv1d/2d/3d calls run triton_conv)" in str(report)


def test_subclass_bypassing_routing_is_named_in_a_warning_and_the_report():
    model = nn.Sequential(RawConvolution2d(2, 3, 3, **F64), nn.Conv2d(3, 2, 1, **F64))
    x = torch.randn(1, 2, 5, 5, **F64)
    with torch.no_grad():
        expected = model(x)
    triton_conv.convert_model(model, include_subclasses=True)
    with (
        _CountOps() as ops,
        pytest.warns(UserWarning, match="RawConvolution2d.forward calls convolution, which triton"),
    ):
        with torch.no_grad():
            _check_close(model(x), expected, "output")
    assert ops.counts["aten.convolution"] == ops.counts["triton_conv.conv_forward"] == 1, ops.counts
    report = triton_conv.conversion_report(model)
    assert list(report.converted) == ["1"] and "cannot route" in report.left["0"]


def test_conversion_report_of_a_model_left_alone():
    model = nn.Sequential(SamePadConv2d(2, 2, 3), nn.Conv2d(2, 2, 1))
    report = triton_conv.conversion_report(model)
    assert report.converted == {} and "include_subclasses=True" in report.left["0"]
    assert "convert_model(model) converts it" in report.left["1"]
    report = triton_conv.conversion_report(triton_conv.convert_model(model))
    assert list(report.converted) == ["1"] and list(report.left) == ["0"]
