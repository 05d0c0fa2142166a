"""The one benchmark harness: inputs, a correctness check, timing, metrics, and the results CSV.

For each shape, dtype, layout and pass it builds random inputs, checks triton_conv's result
against torch's float64 convolution on the same values, and only then times triton_conv,
``F.conv*`` (cuDNN, with ``cudnn.benchmark``) and, for 1x1 and patch-embedding shapes, ``torch.mm`` on the same GEMM.

On CUDA, times are ``triton.testing.do_bench`` medians (CUDA events, warm-up, L2 flushed before
every repetition; the signature is the same in Triton 3.6 and 3.9). On CPU (``--smoke``) the
kernels run through Triton's interpreter and are timed by wall clock: the same code path, but
the numbers say nothing about speed and every row says so in its ``timing`` column.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from pathlib import Path

import torch
import triton
from triton_conv.autograd import conv as convolution_op
from triton_conv.autograd import conv_input_grad, conv_weight_grad

from triton_conv.spec import output_memory_format
from triton_conv.testing import (
    TORCH_CONV,
    TORCH_CONV_TRANSPOSE,
    TRITON_CONV,
    TRITON_CONV_TRANSPOSE,
    in_layout,
    tolerance,
)
from triton_conv.testing import relative_error as tensor_relative_error

from .suite import DTYPES, LAYOUTS, Ceilings, DtypeSpec, SuiteShape, pass_bytes, pass_flops, roofline_ms

TIMING_CUDA = "cuda_events"
TIMING_CPU = "cpu_wall_clock_not_a_speed"
RESULTS_DIR = Path(__file__).resolve().parent / "results"
DEFAULT_CSV = RESULTS_DIR / "results.csv"
SMOKE_CSV = RESULTS_DIR / "smoke.csv"

Outputs = dict[str, torch.Tensor]


# ---------------------------------------------------------------------------------------------
# The results CSV: one row per (shape, dtype, layout, pass), appended, never rewritten.


@dataclass
class ResultRow:
    """One measurement. Times in ms; ratios are baseline time / triton-conv time (above 1: faster).

    ``check`` is "ok", "wrong: ..." (not timed) or "error: ..." (the pass raised). ``timing``
    says how times were taken; ``cpu_wall_clock_not_a_speed`` rows come from interpreter runs.
    """

    timestamp: str
    run_id: str
    gpu: str
    torch_version: str
    triton_version: str
    cuda_version: str
    timing: str
    shape: int
    name: str
    dims: int
    dtype: str
    layout: str
    pass_: str
    flops: int
    min_bytes: int
    check: str
    max_rel_error: float | None = None
    tolerance: float | None = None
    triton_ms: float | None = None
    cudnn_ms: float | None = None
    mm_ms: float | None = None
    tflops: float | None = None
    gbps: float | None = None
    roofline_pct: float | None = None
    ratio_cudnn: float | None = None
    ratio_mm: float | None = None
    ceiling_tflops: float | None = None
    ceiling_gbps: float | None = None


CSV_FIELDS = [f.name for f in fields(ResultRow)]
_FIELD_TYPES = {f.name: f.type for f in fields(ResultRow)}


def append_rows(path: Path, rows: list[ResultRow]) -> None:
    """Append ``rows`` to the CSV at ``path``, writing the header if the file is new.

    Refuses a file whose header differs: appending under another schema would garble it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists() or path.stat().st_size == 0
    if not new:
        with path.open(newline="") as f:
            header = next(csv.reader(f), [])
        if header != CSV_FIELDS:
            raise ValueError(f"{path} has columns {header}, expected {CSV_FIELDS}: write to another --csv")
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        if new:
            writer.writeheader()
        for row in rows:
            writer.writerow({k: _cell(v) for k, v in dataclasses.asdict(row).items()})


def _cell(value: object) -> object:
    """Empty for None; floats to 6 significant digits, far below timing noise."""
    if value is None:
        return ""
    return f"{value:.6g}" if isinstance(value, float) else value


def read_rows(path: Path) -> list[ResultRow]:
    """Every row of a results CSV, typed back (empty cells are None)."""
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames != CSV_FIELDS:
            raise ValueError(f"{path} has columns {reader.fieldnames}, expected {CSV_FIELDS}")
        return [ResultRow(**{k: _parse(k, v) for k, v in record.items()}) for record in reader]


def _parse(field: str, text: str) -> object:
    kind = _FIELD_TYPES[field]
    if kind == "int":
        return int(text)
    if kind == "float | None":
        return float(text) if text else None
    return text


# ---------------------------------------------------------------------------------------------
# Where the run happens


@dataclass(frozen=True)
class Environment:
    """The machine and versions every row records, and how times are taken on it."""

    device: torch.device
    gpu: str
    torch_version: str
    triton_version: str
    cuda_version: str
    timing: str

    @staticmethod
    def detect(device: torch.device) -> Environment:
        on_cuda = device.type == "cuda"
        return Environment(
            device=device,
            gpu=torch.cuda.get_device_name(device) if on_cuda else "cpu",
            torch_version=torch.__version__,
            triton_version=triton.__version__,
            cuda_version=torch.version.cuda or "",
            timing=TIMING_CUDA if on_cuda else TIMING_CPU,
        )


Timer = Callable[[Callable[[], object]], float]


def cuda_median_ms(fn: Callable[[], object]) -> float:
    """Median of CUDA-event timings after warm-up, with the L2 cache flushed before each repetition."""
    return float(triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median"))


def wall_clock_ms(fn: Callable[[], object]) -> float:
    """Wall-clock time of one call after one warm-up call: for CPU smoke runs, where it is not a speed."""
    fn()
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


def timer_for(device: torch.device) -> Timer:
    return cuda_median_ms if device.type == "cuda" else wall_clock_ms


@contextlib.contextmanager
def torch_flags(*, cudnn_benchmark: bool, tf32: bool) -> Iterator[None]:
    """Set cuDNN autotuning and TF32 (for convolutions, which triton_conv follows, and matmuls); restore after."""
    saved = (torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.benchmark = cudnn_benchmark
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    try:
        yield
    finally:
        (
            torch.backends.cudnn.benchmark,
            torch.backends.cudnn.allow_tf32,
            torch.backends.cuda.matmul.allow_tf32,
        ) = saved


def measure_ceilings(device: torch.device, dtype_names: list[str], timer: Timer) -> Ceilings:
    """Dense matmul TFLOP/s per dtype and device-copy GB/s on this machine, measured now."""
    on_cuda = device.type == "cuda"
    # Large enough to reach the GPU's peak; small on CPU, where only the code path matters.
    n = 8192 if on_cuda else 256
    copy_elements = (1 << 30 if on_cuda else 1 << 22) // 4
    tflops = {}
    for name in dtype_names:
        spec = DTYPES[name]
        a = torch.randn(n, n, device=device).to(spec.dtype)
        b = torch.randn(n, n, device=device).to(spec.dtype)
        with torch_flags(cudnn_benchmark=False, tf32=spec.tf32):
            ms = timer(lambda a=a, b=b: torch.mm(a, b))
        tflops[name] = 2 * n**3 / (ms * 1e9)
    src = torch.randn(copy_elements, device=device)
    dst = torch.empty_like(src)
    ms = timer(lambda: dst.copy_(src))
    # A copy reads and writes every byte once.
    gbps = 2 * src.nbytes / (ms * 1e6)
    return Ceilings(tflops=tflops, gbps=gbps)


# ---------------------------------------------------------------------------------------------
# Inputs, references and the check


@dataclass(frozen=True)
class Operands:
    """Input x, weight w, bias b and output cotangent dy of one shape, in one dtype and layout.

    dy doubles as the fused epilogue's residual: both are random tensors of the output's shape.
    """

    x: torch.Tensor
    w: torch.Tensor
    b: torch.Tensor
    dy: torch.Tensor

    @staticmethod
    def random(shape: SuiteShape, dtype: DtypeSpec, device: torch.device, seed: int = 0) -> Operands:
        """float64 operands holding values exactly representable in ``dtype``, for the reference."""
        # Random normals, never zeros: an all-zero operand lets a wrong kernel pass the check.
        generator = torch.Generator(device=device).manual_seed(seed)
        reduction = reduction_length(shape, "F")

        def values(size: tuple[int, ...], scale: float = 1.0) -> torch.Tensor:
            t = torch.randn(size, generator=generator, device=device, dtype=torch.float64) * scale
            return t.to(dtype.dtype).to(torch.float64)

        # Weights scaled by 1/sqrt(reduction) keep outputs near unit size, far from float16's range limit.
        return Operands(
            x=values(shape.input_shape()),
            w=values(shape.weight_shape(), 1 / math.sqrt(reduction)),
            b=values((shape.out_channels,)),
            dy=values(shape.output_shape()),
        )

    def cast(self, dtype: torch.dtype, layout: str) -> Operands:
        return Operands(*(in_layout(t.to(dtype), layout) for t in (self.x, self.w, self.b, self.dy)))


def conv_arguments(shape: SuiteShape) -> dict[str, object]:
    transposed = dict(output_padding=list(shape.output_padding)) if shape.transposed else {}
    return dict(
        stride=list(shape.stride),
        padding=list(shape.padding),
        dilation=list(shape.dilation),
        groups=shape.groups,
        **transposed,
    )


def torch_conv(shape: SuiteShape) -> Callable[..., torch.Tensor]:
    """``F.conv*d`` or, for a transposed shape, ``F.conv_transpose*d``."""
    return (TORCH_CONV_TRANSPOSE if shape.transposed else TORCH_CONV)[shape.dims]


def _torch_conv_backward(shape: SuiteShape, ops: Operands, mask: list[bool]) -> tuple[torch.Tensor | None, ...]:
    """torch's convolution backward (aten's, cuDNN on CUDA): the gradients ``mask`` asks for, as
    (input, weight, bias) with None for the others."""
    output_padding = list(shape.output_padding) if shape.transposed else [0] * shape.dims
    return torch.ops.aten.convolution_backward(
        ops.dy, ops.x, ops.w, None, list(shape.stride), list(shape.padding), list(shape.dilation),
        shape.transposed, output_padding, shape.groups, mask,
    )  # fmt: skip


def reference_outputs(shape: SuiteShape, ops: Operands, passes: tuple[str, ...]) -> Outputs:
    """torch's float64 convolution, fused epilogue and gradients: what ``passes`` produce (y, y_fused, dx, dw)."""
    backward = set(shape.passes) if "FB" in passes else set()
    wanted_dx, wanted_dw = "D" in backward | set(passes), "W" in backward | set(passes)
    out = {}
    if "F" in passes or "FB" in passes:
        out["y"] = torch_conv(shape)(ops.x, ops.w, None, **conv_arguments(shape))
    if "E" in passes:
        out["y_fused"] = torch.relu(torch_conv(shape)(ops.x, ops.w, ops.b, **conv_arguments(shape)) + ops.dy)
    if wanted_dx or wanted_dw:
        dx, dw, _ = _torch_conv_backward(shape, ops, [wanted_dx, wanted_dw, False])
        out.update({k: v for k, v in (("dx", dx), ("dw", dw)) if v is not None})
    return out


def reduction_length(shape: SuiteShape, pass_: str) -> int:
    """Products summed per output element: over (C/g)·taps, (K/g)·taps, or N·output pixels
    (a transposed shape's forward and input gradient are its convolution's input gradient and forward)."""
    spec = shape.geometry()
    forward, input_grad = spec.in_channels_per_group * spec.taps, spec.out_channels_per_group * spec.taps
    if shape.transposed:
        forward, input_grad = input_grad, forward
    lengths = {"F": forward, "D": input_grad, "W": spec.output_pixels, "E": forward}
    if pass_ == "FB":
        return max(lengths[p] for p in ("F", *shape.passes) if p in lengths)
    return lengths[pass_]


def relative_error(actual: Outputs, expected: Outputs) -> float:
    """Largest over outputs of max |actual - expected| / max |expected|."""
    worst = 0.0
    for key, value in actual.items():
        ref = expected[key]
        if value.shape != ref.shape:
            raise AssertionError(f"{key}: shape {tuple(value.shape)}, expected {tuple(ref.shape)}")
        worst = max(worst, tensor_relative_error(value, ref))
    return worst


# ---------------------------------------------------------------------------------------------
# The passes, as callables returning their outputs


def triton_pass(shape: SuiteShape, pass_: str, ops: Operands) -> Callable[[], Outputs]:
    """triton_conv's pass: the public ``conv*d`` (with the fused epilogue for ``E``), the gradient
    custom ops, or autograd through ``conv*d`` (``conv_transpose*d`` for transposed shapes)."""
    if shape.transposed:
        return _transposed_triton_pass(shape, pass_, ops)
    conv = TRITON_CONV[shape.dims]
    args = conv_arguments(shape)
    padding = list(shape.padding) * 2  # the ops take leading then trailing padding
    geometry = (list(shape.stride), padding, list(shape.dilation), shape.groups)
    if pass_ == "F":
        return lambda: {"y": conv(ops.x, ops.w, None, **args)}
    if pass_ == "E":
        return lambda: {"y_fused": conv(ops.x, ops.w, ops.b, **args, activation="relu", residual=ops.dy)}
    if pass_ == "D":
        # What autograd asks of the op: a channels-last input gradient when the output is channels-last.
        channels_last = output_memory_format(ops.x, ops.w) != torch.contiguous_format
        return lambda: {"dx": conv_input_grad(ops.dy, ops.w, list(ops.x.shape), channels_last, *geometry)}
    if pass_ == "W":
        return lambda: {"dw": conv_weight_grad(ops.dy, ops.x, list(ops.w.shape), *geometry, False)[0]}
    return _forward_backward(shape, ops, lambda x, w: conv(x, w, None, **args))


def _transposed_triton_pass(shape: SuiteShape, pass_: str, ops: Operands) -> Callable[[], Outputs]:
    """A transposed shape's passes, as autograd runs them: the input gradient is a forward
    convolution of dy, the weight gradient the convolution's weight gradient with x as its dy."""
    conv_transpose = TRITON_CONV_TRANSPOSE[shape.dims]
    args = conv_arguments(shape)
    geometry = (list(shape.stride), shape.geometry().op_padding(), list(shape.dilation), shape.groups)
    if pass_ == "F":
        return lambda: {"y": conv_transpose(ops.x, ops.w, None, **args)}
    if pass_ == "E":
        return lambda: {"y_fused": conv_transpose(ops.x, ops.w, ops.b, **args, activation="relu", residual=ops.dy)}
    if pass_ == "D":
        return lambda: {"dx": convolution_op(ops.dy, ops.w, None, *geometry)}
    if pass_ == "W":
        return lambda: {"dw": conv_weight_grad(ops.x, ops.dy, list(ops.w.shape), *geometry, False)[0]}
    return _forward_backward(shape, ops, lambda x, w: conv_transpose(x, w, None, **args))


def torch_pass(shape: SuiteShape, pass_: str, ops: Operands) -> Callable[[], Outputs]:
    """The baseline: ``F.conv*`` and aten's convolution backward (cuDNN on CUDA); for ``E``, the
    convolution with bias then the residual add and relu in place, as torchvision's ResNet does."""
    conv = torch_conv(shape)
    args = conv_arguments(shape)
    if pass_ == "F":
        return lambda: {"y": conv(ops.x, ops.w, None, **args)}
    if pass_ == "E":
        return lambda: {"y_fused": torch.relu_(conv(ops.x, ops.w, ops.b, **args).add_(ops.dy))}
    if pass_ == "D":
        return lambda: {"dx": _torch_conv_backward(shape, ops, [True, False, False])[0]}
    if pass_ == "W":
        return lambda: {"dw": _torch_conv_backward(shape, ops, [False, True, False])[1]}
    return _forward_backward(shape, ops, lambda x, w: conv(x, w, None, **args))


def _forward_backward(
    shape: SuiteShape, ops: Operands, conv: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
) -> Callable[[], Outputs]:
    """Forward, then the gradients the shape's passes list, through autograd (no .grad accumulation)."""
    x = ops.x.detach().requires_grad_("D" in shape.passes)
    w = ops.w.detach().requires_grad_("W" in shape.passes)
    leaves = {name: t for name, t in (("dx", x), ("dw", w)) if t.requires_grad}

    def run() -> Outputs:
        y = conv(x, w)
        grads = torch.autograd.grad(y, list(leaves.values()), ops.dy)
        return {"y": y.detach(), **dict(zip(leaves, grads))}

    return run


def mm_pass(shape: SuiteShape, pass_: str, dtype: torch.dtype, device: torch.device) -> Callable[[], object]:
    """``torch.mm`` on the GEMM a plain-GEMM convolution's pass is (1x1 filters, patch embeddings):
    (pixels x C·taps) @ (C·taps x K), and its two gradients; the patches are taken as already unfolded."""
    m = shape.geometry().output_pixels
    reduction = shape.in_channels * math.prod(shape.kernel)
    a = torch.randn(m, reduction, device=device).to(dtype)  # x as pixels x C·taps
    b = torch.randn(reduction, shape.out_channels, device=device).to(dtype)  # w as C·taps x K
    g = torch.randn(m, shape.out_channels, device=device).to(dtype)  # dy as pixels x K
    gemms = {"F": lambda: torch.mm(a, b), "D": lambda: torch.mm(g, b.t()), "W": lambda: torch.mm(g.t(), a)}
    if pass_ != "FB":
        return gemms[pass_]
    chosen = [gemm for p, gemm in gemms.items() if p == "F" or p in shape.passes]
    return lambda: [gemm() for gemm in chosen]


# ---------------------------------------------------------------------------------------------
# The run


@dataclass(frozen=True)
class Job:
    """One shape in one dtype, and which of its passes to run."""

    shape: SuiteShape
    dtype: str
    passes: tuple[str, ...]


@dataclass(frozen=True)
class Run:
    """What every measurement of one run shares: the machine, the clock, the ceilings, an id."""

    env: Environment
    timer: Timer
    ceilings: Ceilings
    run_id: str


def run_jobs(
    jobs: list[Job],
    env: Environment,
    csv_path: Path,
    log: Callable[[str], None] = print,
    layouts: tuple[str, ...] = LAYOUTS,
) -> list[ResultRow]:
    """Check and time every job in every layout, appending each row to ``csv_path`` as it is measured."""
    timer = timer_for(env.device)
    log(f"measuring ceilings on {env.gpu} ({env.timing})")
    ceilings = measure_ceilings(env.device, sorted({job.dtype for job in jobs}), timer)
    peaks = ", ".join(f"{name} matmul {value:.4g} TFLOP/s" for name, value in ceilings.tflops.items())
    log(f"  {peaks}, copy {ceilings.gbps:.4g} GB/s")
    run = Run(env, timer, ceilings, _now())
    rows = []
    for job in jobs:
        # One line as each shape starts: what a watchdog (triton-conv gpu-check) times shapes by.
        log(f"shape {job.shape.number} {job.shape.name} {job.dtype}: {' '.join(job.passes)}")
        dtype = DTYPES[job.dtype]
        operands = Operands.random(job.shape, dtype, env.device)
        expected = reference_outputs(job.shape, operands, job.passes)
        for layout in layouts:
            ops = operands.cast(dtype.dtype, layout)
            for pass_ in job.passes:
                row = measure(job.shape, pass_, job.dtype, layout, ops, expected, run)
                append_rows(csv_path, [row])
                rows.append(row)
                log(_progress_line(row))
        del operands, expected, ops
        if env.device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def measure(
    shape: SuiteShape, pass_: str, dtype_name: str, layout: str, ops: Operands, expected: Outputs, run: Run
) -> ResultRow:
    """Check one pass against the float64 reference, then (if right) time it and its baselines."""
    dtype = DTYPES[dtype_name]
    flops = pass_flops(shape, pass_)
    nbytes = pass_bytes(shape, pass_, dtype.dtype.itemsize)
    tol = tolerance(dtype_name, reduction_length(shape, pass_))
    env, timer = run.env, run.timer
    row = ResultRow(
        timestamp=_now(), run_id=run.run_id, gpu=env.gpu, torch_version=env.torch_version,
        triton_version=env.triton_version, cuda_version=env.cuda_version, timing=env.timing,
        shape=shape.number, name=shape.name, dims=shape.dims, dtype=dtype_name, layout=layout, pass_=pass_,
        flops=flops, min_bytes=nbytes, check="ok", tolerance=tol,
        ceiling_tflops=run.ceilings.tflops[dtype_name], ceiling_gbps=run.ceilings.gbps,
    )  # fmt: skip
    try:
        with torch_flags(cudnn_benchmark=True, tf32=dtype.tf32):
            ours = triton_pass(shape, pass_, ops)
            row.max_rel_error = relative_error(ours(), expected)
            if row.max_rel_error > tol:
                row.check = f"wrong: relative error {row.max_rel_error:.2e} > {tol:.1e}"
                return row
            row.triton_ms = timer(ours)
            row.cudnn_ms = timer(torch_pass(shape, pass_, ops))
            if shape.plain_gemm and pass_ != "E":  # an epilogue has no torch.mm counterpart
                row.mm_ms = timer(mm_pass(shape, pass_, dtype.dtype, env.device))
    except Exception as e:  # a failing pass must not end a long run: record it and go on
        row.check = f"error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
        return row
    row.tflops = flops / (row.triton_ms * 1e9)
    row.gbps = nbytes / (row.triton_ms * 1e6)
    bound = roofline_ms(flops, nbytes, row.ceiling_tflops, row.ceiling_gbps)
    row.roofline_pct = 100 * bound / row.triton_ms
    row.ratio_cudnn = row.cudnn_ms / row.triton_ms
    row.ratio_mm = row.mm_ms / row.triton_ms if row.mm_ms is not None else None
    return row


def _progress_line(row: ResultRow) -> str:
    head = f"  {row.shape:>2} {row.name:<20} {row.pass_:<2} {row.dtype:<8} {row.layout:<13}"
    if row.check != "ok":
        return f"{head} {row.check}"
    mm = f"  mm x{row.ratio_mm:.2f}" if row.ratio_mm is not None else ""
    baseline = "cuDNN" if row.timing == TIMING_CUDA else "torch-cpu"
    return (
        f"{head} {row.triton_ms:9.3f} ms  {row.tflops:8.3g} TFLOP/s  {row.gbps:8.3g} GB/s  "
        f"{row.roofline_pct:6.3g}% roofline  {baseline} x{row.ratio_cudnn:.2f}{mm}"
    )


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
