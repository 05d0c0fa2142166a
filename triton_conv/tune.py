"""``triton-conv tune``: autotune the GEMM kernels for every convolution of a model or a file.

Problems come from ``--model module:factory --input-shape N,C,H,W`` (the model is run once on
the meta device, falling back to the CPU, with forward hooks on ``nn.Conv1d/2d/3d``) or from
``--shapes FILE``: a JSON list of objects, or a CSV with a header, with the fields

    input_shape, weight_shape, stride, padding, dilation, groups[, dtype][, channels_last]

where sequences are JSON lists (JSON) or ``x``-separated ints such as ``8x3x224x224`` (CSV),
``padding`` may also be ``same``/``valid``, ``dtype`` is a torch dtype name (``float16``) and
``channels_last`` is true/false (default false). ``--dtype`` and ``--channels-last`` override
the file. Each unique autotune key is tuned once; winners go to the on-disk cache.
"""

from __future__ import annotations

import argparse
import copy
import csv
import importlib
import json
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import functional
from .cli import one_line
from .kernels import dispatch
from .kernels.banded import BANDED_FORWARD, BANDED_WEIGHT_GRAD
from .kernels.common import dot_precision_on
from .kernels.direct import DIRECT_FORWARD, DIRECT_INPUT_GRAD, DIRECT_WEIGHT_GRAD
from .kernels.implicit_gemm_forward import FORWARD
from .kernels.implicit_gemm_forward_tma import FORWARD_TMA, tma_forward_applies
from .kernels.implicit_gemm_input_grad import INPUT_GRAD
from .kernels.implicit_gemm_weight_grad import WEIGHT_GRAD
from .kernels.layout import gemm_operand
from .kernels.patches import PATCH_FORWARD, PATCH_WEIGHT_GRAD
from .kernels.planes import plane_kind_of
from .runtime import INTERPRETER
from .spec import ConvSpec, as_3d, conv_spec, output_memory_format
from .tuning.key import autotune_key, layout_of
from .tuning.kinds import KernelKind
from .tuning.select import TuningRecord, autotuning

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32, "float64": torch.float64}
MEMORY_FORMATS = {3: torch.contiguous_format, 4: torch.channels_last, 5: torch.channels_last_3d}


@dataclass(frozen=True)
class ConvProblem:
    """One convolution as a model runs it; ``padding`` as the module holds it (ints or a string)."""

    input_shape: tuple[int, ...]
    weight_shape: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...] | str
    dilation: tuple[int, ...]
    groups: int
    dtype: torch.dtype
    channels_last: bool

    @property
    def ndim(self) -> int:
        return len(self.input_shape) - 2

    def tensors(self, device: str | torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Input and weight of this problem on ``device``, channels-last if it is."""
        fmt = MEMORY_FORMATS[len(self.input_shape)] if self.channels_last else torch.contiguous_format
        x = torch.randn(self.input_shape, dtype=self.dtype, device=device).to(memory_format=fmt)
        w = torch.randn(self.weight_shape, dtype=self.dtype, device=device).to(memory_format=fmt)
        return x, w

    def spec(self) -> ConvSpec:
        x, w = self.tensors("meta")
        return conv_spec(x, w, None, self.stride, self.padding, self.dilation, self.groups, self.ndim)

    def describe(self) -> str:
        layout = " cl" if self.channels_last else ""
        pad = self.padding if isinstance(self.padding, str) else list(self.padding)
        return (
            f"x{list(self.input_shape)} w{list(self.weight_shape)} s{list(self.stride)} p{pad} "
            f"d{list(self.dilation)} g{self.groups} {str(self.dtype).removeprefix('torch.')}{layout}"
        )


def problem_keys(problem: ConvProblem, backward: bool) -> dict[str, str]:
    """Pass and kernel kind -> the autotune key its launch on a GPU uses: ``forward``,
    ``input_grad``, ``weight_grad`` for the GEMM kernels; ``forward_tma`` where the TMA kernel
    runs the forward on Hopper (a meta tensor plans for one) and, as ``forward_tma (input_grad)``,
    the input gradient, its forward of the flipped filter (also for bundles of groups,
    ``dispatch.group_bundle``, where the pointer kernel's are ``forward`` and ``forward
    (input_grad)``); ``banded_forward`` and ``banded_forward (input_grad)`` likewise for the band
    kernels (``patch_forward``, ``patch_forward (input_grad)`` and ``patch_weight_grad`` for the
    patch kernels), and ``banded_weight_grad``; ``direct_forward``, ``direct_input_grad`` and
    ``direct_weight_grad`` for the direct kernels."""
    spec = problem.spec()
    x, w = problem.tensors("meta")
    y = torch.empty(spec.out_shape, dtype=x.dtype, device="meta", memory_format=output_memory_format(x, w))
    precision = dot_precision_on(problem.dtype, "cuda")

    def key(kind: KernelKind, kind_spec: ConvSpec, layout: str) -> str:
        return autotune_key(kind, kind_spec, problem.dtype, precision, layout)

    def bundles_key(operand: torch.Tensor, forward: ConvSpec, bundle: int, role: str = "") -> None:
        """The GEMM of ``dispatch.forward_of_bundles`` over ``operand`` for ``forward``; the
        direct kernel gated behind it runs the heuristic's knobs, untuned."""
        bundles = dispatch.bundled_spec(forward, bundle)
        if tma_forward_applies(gemm_operand(as_3d(operand)), bundles):
            keys[FORWARD_TMA.name + role] = key(FORWARD_TMA, bundles, "cl")
        else:
            keys[FORWARD.name + role] = key(FORWARD, bundles, FORWARD.key_layout(operand, None))

    keys: dict[str, str] = {}
    if dispatch.uses_direct_kernel(spec):
        if dispatch.uses_banded_kernel(x, spec) and dispatch.band_fits(x, spec):
            keys[BANDED_FORWARD.name] = key(BANDED_FORWARD, spec, layout_of(x))
        elif dispatch.uses_plane_kernel(x, spec):
            kind = plane_kind_of(x, transposed=False)
            keys[kind.name] = key(kind, spec, layout_of(x))
        elif dispatch.uses_patch_kernel(x, spec):
            keys[PATCH_FORWARD.name] = key(PATCH_FORWARD, spec, layout_of(x))
        elif (bundle := dispatch.forward_bundle(spec, problem.dtype)) > 1:
            bundles_key(x, spec, bundle)
        else:
            keys[DIRECT_FORWARD.name] = key(DIRECT_FORWARD, spec, DIRECT_FORWARD.key_layout(x, y))
        if backward:
            if dispatch.uses_banded_input_grad(y, spec):
                forward = spec.input_grad_as_forward()
                keys[f"{BANDED_FORWARD.name} (input_grad)"] = key(BANDED_FORWARD, forward, layout_of(y))
            elif dispatch.uses_plane_input_grad(y, spec):
                kind = plane_kind_of(y, transposed=True)
                keys[kind.name] = key(kind, spec, layout_of(y))
            elif dispatch.uses_patch_input_grad(y, spec):
                forward = spec.input_grad_as_forward()
                keys[f"{PATCH_FORWARD.name} (input_grad)"] = key(PATCH_FORWARD, forward, layout_of(y))
            elif (bundle := dispatch.input_grad_bundle(spec, problem.dtype)) > 1:
                bundles_key(y, spec.input_grad_as_forward(), bundle, " (input_grad)")
            else:
                keys[DIRECT_INPUT_GRAD.name] = key(DIRECT_INPUT_GRAD, spec, DIRECT_INPUT_GRAD.key_layout(x, y))
            if dispatch.uses_banded_weight_grad(y, x, spec):
                keys[BANDED_WEIGHT_GRAD.name] = key(BANDED_WEIGHT_GRAD, spec, BANDED_WEIGHT_GRAD.key_layout(x, y))
            elif dispatch.group_bundle(spec, problem.dtype) > 1:
                bundles = dispatch.weight_grad_spec(spec, problem.dtype)
                keys[WEIGHT_GRAD.name] = key(WEIGHT_GRAD, bundles, WEIGHT_GRAD.key_layout(x, y))
            elif dispatch.uses_patch_weight_grad(x, spec):
                keys[PATCH_WEIGHT_GRAD.name] = key(PATCH_WEIGHT_GRAD, spec, layout_of(x))
            else:
                keys[DIRECT_WEIGHT_GRAD.name] = key(DIRECT_WEIGHT_GRAD, spec, DIRECT_WEIGHT_GRAD.key_layout(x, y))
        return keys
    # The forward of a patch embedding or a first layer runs on its folded problem, channels-last.
    forward = dispatch.forward_spec(x, spec)
    if dispatch.forward_runs_tma(gemm_operand(as_3d(x)), spec, forward):
        keys[FORWARD_TMA.name] = key(FORWARD_TMA, forward, "cl")
    else:
        keys[FORWARD.name] = key(FORWARD, forward, FORWARD.key_layout(x, y) if forward == spec else "cl")
    if backward:
        if dispatch.tma_input_grad_applies(gemm_operand(as_3d(y)), spec):
            keys[f"{FORWARD_TMA.name} (input_grad)"] = key(FORWARD_TMA, spec.input_grad_as_forward(), "cl")
        else:
            keys[INPUT_GRAD.name] = key(INPUT_GRAD, spec, INPUT_GRAD.key_layout(x, y))
        # A first layer's weight gradient reads its padded copy, channels-last.
        weight_grad = dispatch.weight_grad_spec(spec, problem.dtype)
        layout = WEIGHT_GRAD.key_layout(x, y) if weight_grad == spec else "cl"
        keys[WEIGHT_GRAD.name] = key(WEIGHT_GRAD, weight_grad, layout)
    return keys


def collect_model_problems(model: nn.Module, input_shape: tuple[int, ...], channels_last: bool) -> list[ConvProblem]:
    """Every convolution ``model`` runs on an input of ``input_shape``, in call order."""
    problems: list[ConvProblem] = []

    def record(module: nn.Module, inputs: tuple[Any, ...]) -> None:
        assert isinstance(module, nn.modules.conv._ConvNd)
        x = inputs[0]
        padding = module.padding
        if module.padding_mode != "zeros" and not isinstance(padding, str):
            # nn.Conv* pads with F.pad first, so the convolution itself sees a padded input.
            spatial = [size + 2 * pad for size, pad in zip(x.shape[2:], padding)]
            x, padding = x.new_empty((*x.shape[:2], *spatial)), (0,) * len(padding)
        problems.append(
            ConvProblem(
                tuple(x.shape), tuple(module.weight.shape), tuple(module.stride), padding,
                tuple(module.dilation), module.groups, x.dtype, channels_last or layout_of(x) == "cl",
            )
        )  # fmt: skip

    def run(device: str) -> None:
        # A copy, so that a failed meta run leaves the real weights for the CPU run.
        moved = copy.deepcopy(model).to(device)
        x = torch.empty(input_shape, device=device)
        if channels_last and len(input_shape) in (4, 5):
            fmt = MEMORY_FORMATS[len(input_shape)]
            moved, x = moved.to(memory_format=fmt), x.to(memory_format=fmt)
        with torch.no_grad():
            moved(x)

    convs = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
    handles = [m.register_forward_pre_hook(record) for m in model.modules() if isinstance(m, convs)]
    try:
        try:
            run("meta")
        except (NotImplementedError, RuntimeError):
            # Some layers have no meta kernel; the CPU runs anything, just slower.
            problems.clear()
            run("cpu")
    finally:
        for handle in handles:
            handle.remove()
    return problems


def load_model(target: str) -> nn.Module:
    """Import ``module:factory`` and call the factory; a ``ValueError`` saying what to fix if that fails."""
    module_name, sep, factory_name = target.partition(":")
    if not sep or not module_name or not factory_name:
        raise ValueError(f"--model must be 'module:factory', got {target!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(
            f"--model {target}: cannot import {module_name} ({one_line(error)}); install the package that "
            "provides it (for torchvision models: a torchvision built for your torch)"
        ) from error
    factory = getattr(module, factory_name, None)
    if not callable(factory):
        raise ValueError(f"--model {target}: {module_name} has no callable {factory_name!r}")
    try:
        model = factory()
    except Exception as error:
        raise ValueError(
            f"--model {target}: {factory_name}() failed ({type(error).__name__}: {one_line(error)}); "
            "--model needs a factory that builds the model with no arguments"
        ) from error
    if not isinstance(model, nn.Module):
        raise ValueError(f"--model {target}: {factory_name}() returned a {type(model).__name__}, not an nn.Module")
    return model


def _ints(value: Any) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,)
    if isinstance(value, str):
        return tuple(int(part) for part in re.split(r"[x, ;]+", value.strip()) if part)
    return tuple(int(v) for v in value)


def _problem(row: dict[str, Any]) -> ConvProblem:
    input_shape = _ints(row["input_shape"])
    ndim = len(input_shape) - 2

    def per_dim(name: str, default: int) -> tuple[int, ...]:
        values = _ints(row.get(name) or default)
        return values * ndim if len(values) == 1 else values

    padding = row.get("padding") or 0
    channels_last = str(row.get("channels_last", "false")).lower() in ("1", "true", "yes")
    return ConvProblem(
        input_shape, _ints(row["weight_shape"]), per_dim("stride", 1),
        padding if padding in ("same", "valid") else per_dim("padding", 0),
        per_dim("dilation", 1), int(row.get("groups") or 1),
        DTYPES[row.get("dtype") or "float32"], channels_last,
    )  # fmt: skip


def load_shapes(path: Path) -> list[ConvProblem]:
    """The problems of a JSON or CSV shapes file (format in the module docstring)."""
    text = path.read_text()
    rows: Iterable[dict[str, Any]]
    if path.suffix.lower() == ".json" or text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not valid JSON ({error}); give a JSON list of objects or a CSV") from None
    else:
        rows = csv.DictReader(text.splitlines())
    is_csv = isinstance(rows, csv.DictReader)
    problems = []
    for number, row in enumerate(rows, 1):
        # A CSV's header is its line 1, so data row n is on line n + 1.
        where = f"{path}, line {number + 1}" if is_csv else f"{path}, problem {number}"
        try:
            problem = _problem(row)
        except (KeyError, ValueError, TypeError, AttributeError) as error:
            raise ValueError(f"{where}: problem {number} is malformed ({error!r}); fix or remove it") from None
        try:
            problem.spec()
        except (RuntimeError, ValueError, TypeError) as error:
            raise ValueError(
                f"{where}: torch rejects this convolution ({one_line(error)}); fix or remove that row"
            ) from None
        problems.append(problem)
    return problems


def _override(problem: ConvProblem, dtype: torch.dtype | None, channels_last: bool) -> ConvProblem:
    return ConvProblem(
        problem.input_shape, problem.weight_shape, problem.stride, problem.padding, problem.dilation,
        problem.groups, dtype or problem.dtype, channels_last or problem.channels_last,
    )  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="module:factory building an nn.Module (needs --input-shape)")
    source.add_argument("--shapes", type=Path, help="a JSON or CSV file of conv problems")
    parser.add_argument("--input-shape", type=_ints, help="the model's input shape, e.g. 8,3,224,224")
    parser.add_argument("--backward", action="store_true", help="also tune the input and weight gradients")
    parser.add_argument("--dtype", choices=sorted(DTYPES), help="dtype of every problem (default: model/file)")
    parser.add_argument("--channels-last", action="store_true", help="run every problem channels-last")
    parser.add_argument("--exhaustive", action="store_true", help="time every config, not the first few")
    parser.add_argument("--dry-run", action="store_true", help="list the problems and their keys; time nothing")


def gather(args: argparse.Namespace) -> list[ConvProblem]:
    if args.model:
        if args.input_shape is None:
            raise ValueError("--model needs --input-shape, e.g. --input-shape 8,3,224,224")
        model = load_model(args.model)
        try:
            problems = collect_model_problems(model, args.input_shape, args.channels_last)
        except Exception as error:
            raise ValueError(
                f"--model {args.model} on --input-shape {','.join(map(str, args.input_shape))}: the model's forward "
                f"failed ({type(error).__name__}: {one_line(error)}); check --input-shape"
            ) from error
    else:
        problems = load_shapes(args.shapes)
    dtype = DTYPES[args.dtype] if args.dtype else None
    # Unique, in first-seen order: a network repeats its blocks.
    return list(dict.fromkeys(_override(p, dtype, args.channels_last) for p in problems))


def _table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in [header, *rows])
    return "\n".join(lines)


def _progress(problems: list[ConvProblem]) -> Iterable[ConvProblem]:
    """A tqdm bar where tqdm is installed; otherwise one flushed line per problem (GPU images may lack tqdm)."""
    try:
        from tqdm import tqdm
    except ImportError:
        for number, problem in enumerate(problems, 1):
            print(f"tuning {number}/{len(problems)}: {problem.describe()}", flush=True)
            yield problem
        return
    yield from tqdm(problems, desc="tuning", unit="problem")


def tune_problem(problem: ConvProblem, backward: bool, mode: str) -> list[TuningRecord]:
    """Run the problem's convolution (and gradients) on the GPU with selection in ``mode``: what
    the cache misses is timed. The keys it timed, in order."""
    x, w = problem.tensors("cuda")
    conv = getattr(functional, f"conv{problem.ndim}d")
    x.requires_grad_(backward)
    w.requires_grad_(backward)
    with autotuning(mode) as records:
        y = conv(x, w, None, problem.stride, problem.padding, problem.dilation, problem.groups)
        if backward:
            y.backward(torch.randn_like(y))
        torch.cuda.synchronize()
    return records


def run(args: argparse.Namespace) -> int:
    try:
        problems = gather(args)
    except (ValueError, OSError, ImportError, AttributeError) as error:
        print(f"triton-conv tune: {error}", file=sys.stderr)
        return 2
    if args.dry_run:
        rows = [(p.describe(), kind, key) for p in problems for kind, key in problem_keys(p, args.backward).items()]
        print(_table(rows, ("problem", "kernel", "key")))
        keys = {row[2] for row in rows}
        print(f"{len(problems)} problems, {len(keys)} keys")
        return 0
    if INTERPRETER or not torch.cuda.is_available():
        print(
            "triton-conv tune: needs a CUDA GPU (and TRITON_INTERPRET unset); nothing was tuned. "
            "Use --dry-run to list the problems and their keys.",
            file=sys.stderr,
        )
        return 2
    rows = []
    for problem in _progress(problems):
        for record in tune_problem(problem, args.backward, "exhaustive" if args.exhaustive else "first_use"):
            c = record.config
            config = f"{c.block_m}x{c.block_n}x{c.block_k} w{c.num_warps} s{c.num_stages} k{c.split_k}"
            speedup = f"{record.heuristic_ms / record.ms:.2f}x"
            rows.append((problem.describe(), record.key.split(":")[0], config, f"{record.ms:.4f}", speedup))
    print(_table(rows, ("problem", "kernel", "config", "ms", "vs heuristic")))
    print(f"{len(rows)} keys tuned; cached keys were not re-timed")
    return 0
