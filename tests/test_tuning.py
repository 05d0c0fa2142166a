"""Autotuning: the bucketed key, the search space, the per-GPU cache, selection and `triton-conv tune`.

No GPU is needed: the timing path runs with CPU tensors, ``can_time`` forced on and a fake timer
that prefers a known config, so nothing is launched; the space is compiled for sm_90 instead.
"""

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from torch import nn

import triton_conv
from triton_conv.cli import main
from triton_conv.kernels.dispatch import KERNEL_KINDS
from triton_conv.kernels.gpu_compile import SHARED_MEMORY_LIMIT, compile_launch
from triton_conv.kernels.implicit_gemm_forward import FORWARD
from triton_conv.kernels.implicit_gemm_input_grad import INPUT_GRAD
from triton_conv.kernels.implicit_gemm_weight_grad import WEIGHT_GRAD
from triton_conv.spec import ConvSpec, conv_spec
from triton_conv.tune import ConvProblem, collect_model_problems, problem_keys
from triton_conv.tuning import cache, configs, select
from triton_conv.tuning.cache import ConfigCache, TunedEntry
from triton_conv.tuning.configs import KernelConfig
from triton_conv.tuning.key import autotune_key, bucket_m
from triton_conv.tuning.kinds import KernelKind

pytestmark = pytest.mark.tuning

REPO = Path(__file__).resolve().parents[1]
DEVICE = "Test GPU 80GB"
ENTRY = TunedEntry(KernelConfig(64, 32, 32, 4, 4), 0.25, "first_use")


def tiny_cnn() -> nn.Module:
    """A stem, a strided conv, a depthwise conv (direct kernel) and a 1x1 conv."""
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1),
        nn.Conv2d(32, 32, 3, padding=1, groups=32),
        nn.Conv2d(32, 64, 1),
    )


def _spec(batch=32, channels=64, out_channels=64, size=56, kernel=3, stride=1, groups=1, dtype=torch.float16):
    x = torch.empty(batch, channels, size, size, dtype=dtype, device="meta")
    w = torch.empty(out_channels, channels // groups, kernel, kernel, dtype=dtype, device="meta")
    return conv_spec(x, w, None, stride=stride, padding=kernel // 2, dilation=1, groups=groups, ndim=2)


# ---------------------------------------------------------------- key


def _kinds(test):
    """Parametrize ``test`` over every registered kernel kind."""
    return pytest.mark.parametrize("kind", KERNEL_KINDS, ids=lambda kind: kind.name)(test)


@_kinds
@pytest.mark.parametrize("size", [7, 14, 28, 56, 112, 224])
def test_batch_32_and_64_share_a_key(kind, size):
    key = autotune_key(kind, _spec(batch=32, size=size), torch.float16, "ieee", "cl")
    assert key == autotune_key(kind, _spec(batch=64, size=size), torch.float16, "ieee", "cl")


def test_key_separates_what_changes_the_winner():
    base = autotune_key(FORWARD, _spec(), torch.float16, "ieee", "cl")
    others = [
        autotune_key(FORWARD, _spec(channels=128), torch.float16, "ieee", "cl"),
        autotune_key(FORWARD, _spec(out_channels=256), torch.float16, "ieee", "cl"),
        autotune_key(FORWARD, _spec(), torch.bfloat16, "ieee", "cl"),
        autotune_key(FORWARD, _spec(), torch.float16, "ieee", "nc"),
        autotune_key(FORWARD, _spec(kernel=1), torch.float16, "ieee", "cl"),
        autotune_key(FORWARD, _spec(stride=2), torch.float16, "ieee", "cl"),
        autotune_key(FORWARD, _spec(groups=2), torch.float16, "ieee", "cl"),
        autotune_key(INPUT_GRAD, _spec(), torch.float16, "ieee", "cl"),
        autotune_key(FORWARD, _spec(batch=1, size=7), torch.float16, "ieee", "cl"),
    ]
    assert len({base, *others}) == len(others) + 1
    assert len(base) < 64


def test_m_buckets_are_powers_of_four_clamped():
    assert [bucket_m(m) for m in (1, 2, 3, 4, 5, 16, 17, 2**17, 2**18 + 1, 2**30)] == [
        1, 4, 4, 4, 16, 16, 64, 2**18, 2**18, 2**18,
    ]  # fmt: skip


# ---------------------------------------------------------------- search space


def _next_pow2(n: int) -> int:
    return max(16, 1 << (n - 1).bit_length())


@_kinds
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64], ids=str)
def test_space_for_a_small_problem_is_no_larger_than_needed(kind, dtype, gpu_tiles):
    spec = _spec(batch=1, channels=20, out_channels=24, size=5, dtype=dtype)
    m, n, k = kind.gemm_extents(spec)
    space = select.search_space(kind, spec, dtype, "ieee", kind.heuristic(spec, dtype, "ieee"), exhaustive=True)
    assert len(space) == len(set(space)) > 0
    for config in space:
        assert config.block_m <= _next_pow2(m) and config.block_n <= _next_pow2(n), config
        assert config.block_k <= _next_pow2(k), config
        assert config.split_k == 1 or kind.split_k is not None, config


@pytest.mark.parametrize(("tiles", "pixels"), [(5, 401_408), (36, 25_088), (64, 6_272), (1, 600)])
def test_occupancy_split_k_fills_the_gpu_within_its_bounds(tiles, pixels, gpu_tiles):
    """Enough programs for every SM when the reduction allows it, never more than MAX_WAVES waves,
    splits at least MIN_BLOCKS_PER_SPLIT blocks long, partial traffic within its share."""
    config = KernelConfig(128, 128, 32, 8, 4)
    partial_bytes = 2**20
    input_bytes = 2**28  # partial traffic bounds the split at 128
    split = configs.occupancy_split_k(config, 2, tiles, pixels, input_bytes, partial_bytes)
    slots = configs.SMS * configs.programs_per_sm(config, 2)
    blocks = -(-pixels // config.block_k)
    assert split == 1 or blocks // split >= configs.MIN_BLOCKS_PER_SPLIT
    assert split == 1 or 2 * split * partial_bytes <= configs.PARTIAL_TRAFFIC_SHARE * input_bytes
    assert tiles * split <= configs.MAX_WAVES * slots
    if split < 128:  # not held back by the traffic bound
        assert tiles * split >= configs.SMS or blocks // (split + 1) < configs.MIN_BLOCKS_PER_SPLIT


def test_weight_grad_space_includes_split_k_within_the_program_cap(gpu_tiles):
    spec = _spec(batch=32, channels=64, out_channels=64, size=56)
    heuristic = WEIGHT_GRAD.heuristic(spec, torch.float16, "ieee")
    space = select.search_space(WEIGHT_GRAD, spec, torch.float16, "ieee", heuristic, exhaustive=True)
    first_use = select.search_space(WEIGHT_GRAD, spec, torch.float16, "ieee", heuristic, exhaustive=False)
    assert {c.split_k for c in space} > {c.split_k for c in first_use} > {1}
    assert set(first_use) <= set(space) and space[0] == first_use[0] == heuristic
    for c in space[1:]:
        assert -(-64 // c.block_m) * -(-64 * spec.taps // c.block_n) * c.split_k <= select.SPLIT_K_PROGRAM_CAP


def _launches(kind: KernelKind, space_of: torch.dtype) -> list:
    """The first-use space of one representative problem, as launches (channels-last)."""
    dtype = space_of
    x = torch.empty(2, 64, 16, 16, dtype=dtype).to(memory_format=torch.channels_last)
    w = torch.empty(128, 64, 3, 3, dtype=dtype).to(memory_format=torch.channels_last)
    spec = conv_spec(x, w, None, stride=1, padding=1, dilation=1, groups=1, ndim=2)
    y = torch.empty(spec.out_shape, dtype=dtype).to(memory_format=torch.channels_last)
    space = select.search_space(kind, spec, dtype, "ieee", kind.heuristic(spec, dtype, "ieee"), exhaustive=False)
    # split_k is a runtime argument: one compile per tile.
    tiles = list(dict.fromkeys(c.__class__(c.block_m, c.block_n, c.block_k, c.num_warps, c.num_stages) for c in space))
    return [kind.plan(spec, x, w, torch.empty(128, dtype=dtype), y, c) for c in tiles]


@_kinds
def test_first_use_space_compiles_for_sm90(kind, gpu_tiles):
    for launch in _launches(kind, torch.float16):
        info = compile_launch(launch, 90)
        assert info.shared_bytes <= SHARED_MEMORY_LIMIT[90], f"shared memory over the sm_90 limit: {info}"
        assert info.spill_bytes == 0, f"register spills: {info}"


# ---------------------------------------------------------------- cache


def test_cache_round_trip(tmp_path):
    ConfigCache(DEVICE, folder=tmp_path).put("forward:a", ENTRY)
    other = ConfigCache(DEVICE, folder=tmp_path)
    assert other.get("forward:a") == ENTRY
    assert other.path.name == "Test_GPU_80GB-triton" + other.triton_version + ".json"
    assert ConfigCache(DEVICE, "0.0.0", folder=tmp_path).get("forward:a") is None


def _write_keys(folder: str, worker: int) -> None:
    for i in range(25):
        ConfigCache(DEVICE, folder=Path(folder)).put(f"forward:{worker}:{i}", ENTRY)


def test_concurrent_writers_keep_every_entry(tmp_path):
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_write_keys, args=(str(tmp_path), w)) for w in range(4)]
    for p in workers:
        p.start()
    for p in workers:
        p.join(60)
        assert p.exitcode == 0
    cache_file = ConfigCache(DEVICE, folder=tmp_path).path
    entries = json.loads(cache_file.read_text())["entries"]
    assert set(entries) == {f"forward:{w}:{i}" for w in range(4) for i in range(25)}
    assert not list(tmp_path.glob("*.tmp")), "temporary files left behind"


def test_writer_killed_mid_write_leaves_a_valid_file(tmp_path):
    script = textwrap.dedent(f"""
        from pathlib import Path
        from triton_conv.tuning.cache import ConfigCache, TunedEntry
        from triton_conv.tuning.configs import KernelConfig
        cache = ConfigCache({DEVICE!r}, folder=Path({str(tmp_path)!r}))
        entry = TunedEntry(KernelConfig(64, 32, 32, 4, 4), 0.25, "first_use")
        cache.save({{f"forward:{{i}}": entry for i in range(3000)}})
        print("ready", flush=True)
        i = 0
        while True:
            i += 1
            cache.save({{f"forward:{{j}}": TunedEntry(entry.config, i, "first_use") for j in range(3000)}})
    """)
    child = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None and child.stdout.readline() == b"ready\n"
        time.sleep(0.5)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert len(ConfigCache(DEVICE, folder=tmp_path).entries()) == 3000


@pytest.mark.parametrize(
    "content",
    [
        b"\x00\xff garbage",
        b'{"schema": 2, "device": "Other GPU", "triton": "%s", "entries": {}}',
        b'{"schema": 2, "device": "Test GPU 80GB", "triton": "0.0.0", "entries": {}}',
        b'{"schema": 1, "device": "Test GPU 80GB", "triton": "%s", "entries": {}}',
        b'{"schema": 2, "device": "Test GPU 80GB", "triton": "%s", "entries": {"k": {"config": 3}}}',
    ],
    ids=["garbage", "other-device", "other-triton", "other-schema", "bad-entry"],
)
def test_unusable_file_is_ignored_once_and_rewritten(tmp_path, content):
    bad = ConfigCache(DEVICE, folder=tmp_path)
    bad.path.write_bytes(content.replace(b"%s", bad.triton_version.encode()))
    with pytest.warns(UserWarning, match="ignoring the tuning cache") as caught:
        assert bad.entries() == {}
        bad.entries()
    assert len(caught) == 1
    bad.put("forward:a", ENTRY)
    assert ConfigCache(DEVICE, folder=tmp_path).entries() == {"forward:a": ENTRY}


def test_shipped_configs_absent_and_present(tmp_path, monkeypatch):
    assert cache.shipped_entries("NVIDIA H100 80GB HBM3") == {}  # none measured yet, none ship
    monkeypatch.setattr(cache, "SHIPPED_DIR", tmp_path / "shipped")
    ConfigCache(DEVICE, folder=tmp_path / "shipped").put("forward:a", ENTRY)
    (tmp_path / "shipped" / ConfigCache(DEVICE, folder=tmp_path).path.name).rename(
        tmp_path / "shipped" / "Test_GPU_80GB.json"
    )
    assert ConfigCache(DEVICE, folder=tmp_path / "user").get("forward:a") == ENTRY


# ---------------------------------------------------------------- selection


class FakeLaunch:
    """What build_launch returns in these tests: never run, only handed to the fake timer."""

    def __init__(self, config: KernelConfig) -> None:
        self.config = config

    def __call__(self) -> None:
        raise AssertionError("a launch ran under the fake timer")


HEURISTIC = KernelConfig(64, 32, 32, 4, 4)
SMALL = dict(batch=2, channels=32, out_channels=32, size=8)


def _fake_time(launch: FakeLaunch) -> float:
    """Larger tiles are faster: the winner is known without running anything."""
    c = launch.config
    return 1e6 / (c.block_m * c.block_n * c.block_k)


def _preferred() -> KernelConfig:
    space = select.search_space(FORWARD, _spec(**SMALL), torch.float16, "ieee", HEURISTIC, exhaustive=False)
    return max(space, key=lambda c: c.block_m * c.block_n * c.block_k)


@pytest.fixture
def timing_on_cpu(tmp_path, monkeypatch):
    """CPU tensors treated as timeable, the fake timer, an empty cache folder."""
    monkeypatch.setenv(cache.CACHE_DIR_ENV, str(tmp_path))
    monkeypatch.delenv(select.AUTOTUNE_ENV, raising=False)
    monkeypatch.setattr(select, "can_time", lambda device: True)
    monkeypatch.setattr(select, "time_ms", _fake_time)
    return tmp_path


@pytest.fixture
def tuned(timing_on_cpu):
    """Every key the test times, in order (the mode from TRITON_CONV_AUTOTUNE)."""
    with select.autotuning() as records:
        yield records


def _select(spec: ConvSpec | None = None) -> KernelConfig:
    spec = spec or _spec(**SMALL)
    cpu = torch.device("cpu")
    return select.select_config(FORWARD, spec, torch.float16, "ieee", "cl", FakeLaunch, HEURISTIC, cpu)


def test_first_use_times_once_then_uses_the_cache(timing_on_cpu, tuned):
    preferred = _preferred()
    assert preferred != HEURISTIC and _select() == preferred
    [record] = tuned
    assert record.config == preferred and record.heuristic_ms == _fake_time(FakeLaunch(HEURISTIC))
    assert _select() == preferred and len(tuned) == 1
    # Another batch size of the same layer shares the entry.
    assert _select(_spec(**{**SMALL, "batch": 3})) == preferred and len(tuned) == 1
    on_disk = json.loads(next(timing_on_cpu.glob("cpu-triton*.json")).read_text())
    assert len(on_disk["entries"]) == 1


@pytest.mark.parametrize("how", ["environment", "argument"])
def test_exhaustive_retunes_a_first_use_entry(timing_on_cpu, tuned, monkeypatch, how):
    _select()
    if how == "environment":
        monkeypatch.setenv(select.AUTOTUNE_ENV, "exhaustive")
        mode = None
    else:
        monkeypatch.setenv(select.AUTOTUNE_ENV, "heuristic")  # the argument wins over the variable
        mode = "exhaustive"
    with select.autotuning(mode) as retuned:
        assert _select() == _preferred()
    [first], [second] = tuned, retuned
    assert second.timed >= first.timed


@pytest.mark.parametrize("why", ["heuristic-mode", "heuristic-argument", "cannot-time"])
def test_heuristic_times_nothing(timing_on_cpu, tuned, monkeypatch, why):
    if why == "heuristic-mode":
        monkeypatch.setenv(select.AUTOTUNE_ENV, "heuristic")
    elif why == "cannot-time":
        monkeypatch.setattr(select, "can_time", lambda device: False)
    with select.autotuning("heuristic" if why == "heuristic-argument" else None) as inner:
        assert _select() == HEURISTIC
    assert tuned == inner == [] and not list(timing_on_cpu.iterdir())


def test_unknown_mode_is_rejected(timing_on_cpu, monkeypatch):
    monkeypatch.setenv(select.AUTOTUNE_ENV, "always")
    with pytest.raises(ValueError, match="TRITON_CONV_AUTOTUNE"):
        _select()
    with pytest.raises(ValueError, match="mode must be one of"), select.autotuning("always"):
        pass


def test_cpu_tensors_and_the_interpreter_are_never_timed():
    assert not select.can_time(torch.device("cpu"))


def test_second_process_reads_the_cache_and_times_nothing(timing_on_cpu):
    winner = _select()
    script = textwrap.dedent("""
        from tests.test_tuning import _select
        from triton_conv.tuning import select

        def refuse(launch):
            raise AssertionError("the child timed a launch")

        select.can_time = lambda device: True
        select.time_ms = refuse
        with select.autotuning() as records:
            config = _select()
        assert records == [], records
        print(config.block_m, config.block_n, config.block_k, config.num_warps, config.num_stages)
    """)
    env = {**os.environ, cache.CACHE_DIR_ENV: str(timing_on_cpu)}
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    c = winner
    assert done.stdout.split() == [str(v) for v in (c.block_m, c.block_n, c.block_k, c.num_warps, c.num_stages)]


# ---------------------------------------------------------------- problems and the CLI

TINY_PROBLEMS = [
    ((2, 3, 16, 16), (16, 3, 3, 3), (1, 1), 1),
    ((2, 16, 16, 16), (32, 16, 3, 3), (2, 2), 1),
    ((2, 32, 8, 8), (32, 1, 3, 3), (1, 1), 32),
    ((2, 32, 8, 8), (64, 32, 1, 1), (1, 1), 1),
]


def test_collects_every_conv_of_a_model():
    problems = collect_model_problems(tiny_cnn(), (2, 3, 16, 16), channels_last=False)
    assert [(p.input_shape, p.weight_shape, p.stride, p.groups) for p in problems] == TINY_PROBLEMS
    assert all(p.dtype == torch.float32 and not p.channels_last for p in problems)
    assert collect_model_problems(tiny_cnn(), (2, 3, 16, 16), channels_last=True)[1].channels_last


def test_dry_run_lists_problems_and_keys(capsys):
    argv = ["tune", "--model", "tests.test_tuning:tiny_cnn", "--input-shape", "2,3,16,16", "--dry-run"]
    assert main([*argv, "--backward", "--dtype", "float16", "--channels-last"]) == 0
    out = capsys.readouterr().out
    # The 3-channel first layer's forward folds each filter row into 3 x 4 channels: 3 taps.
    assert "forward:float16:ieee:cl:m1024:n16:k16:t3:g0:s0" in out
    assert "weight_grad:float16:ieee:cl:m256:n32:k16:t9:g0:s1" in out
    # The depthwise layer's 8x8 planes: the plane kernel, its weight gradient direct.
    assert "plane_forward:float16:ieee:cl:m4:n16:k16:t9:g1:s0:c32:i64:o64" in out
    assert "plane_input_grad:float16:ieee:cl:" in out
    assert "direct_weight_grad:float16:ieee:cl:m256:n16:k16:t9:g1:s0:cg1:kg1:c32:w8" in out
    assert out.strip().endswith("4 problems, 12 keys")


def test_dry_run_lists_the_tma_kernels_keys(gpu_tiles):
    """A padded stride-1 3x3 layer (ResNet stage 2): its forward and input gradient run the TMA
    kernel on Hopper (in either layout), tuned under its own keys; the input gradient's is that
    of its forward of the flipped filter (here the same geometry, so the same key)."""
    for channels_last in (True, False):
        problem = ConvProblem((8, 64, 56, 56), (64, 64, 3, 3), (1, 1), (1, 1), (1, 1), 1, torch.bfloat16, channels_last)
        keys = problem_keys(problem, backward=True)
        assert list(keys) == ["forward_tma", "forward_tma (input_grad)", "weight_grad"], keys
        assert keys["forward_tma"].startswith("forward_tma:bfloat16:ieee:cl:")
        assert keys["forward_tma (input_grad)"] == keys["forward_tma"]


def test_dry_run_lists_a_folded_forward_on_the_pointer_kernel(gpu_tiles):
    """A first layer folded in place (W unpadded, channels-last; stride 1 and H padded, where the
    unfolded problem would take the TMA kernel): the pointer kernel on the folded problem, whose
    overlapping pixels no TMA box can read."""
    problem = ConvProblem((2, 4, 12, 20), (16, 4, 3, 4), (1, 1), (1, 0), (1, 1), 1, torch.bfloat16, True)
    keys = problem_keys(problem, backward=False)
    assert list(keys) == ["forward"] and keys["forward"].startswith("forward:bfloat16:ieee:cl:"), keys
    assert ":k16:t3:" in keys["forward"]  # 4 columns x 4 channels, 3 filter rows


@pytest.mark.parametrize("suffix", [".json", ".csv"])
def test_dry_run_reads_a_shapes_file(tmp_path, capsys, suffix):
    path = tmp_path / f"shapes{suffix}"
    if suffix == ".json":
        rows = [
            {"input_shape": [8, 64, 56, 56], "weight_shape": [64, 64, 3, 3], "stride": 1, "padding": 1,
             "dilation": 1, "groups": 1, "dtype": "bfloat16"},
            {"input_shape": [8, 64, 100], "weight_shape": [128, 64, 5], "stride": [2], "padding": "valid",
             "dilation": 1, "groups": 1, "channels_last": False},
        ]  # fmt: skip
        path.write_text(json.dumps(rows))
    else:
        path.write_text(
            "input_shape,weight_shape,stride,padding,dilation,groups,dtype\n"
            "8x64x56x56,64x64x3x3,1,1,1,1,bfloat16\n"
            "8x64x100,128x64x5,2,valid,1,1,float32\n"
        )
    assert main(["tune", "--shapes", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    # The forward reads a channels-last copy of an NCHW input, and its key says so.
    assert "forward:bfloat16:ieee:cl:m65536:n64:k64:t9:g0:s0" in out
    assert ":cl:m1024:n128:k64:t5:g0:s1" in out
    assert out.strip().endswith("2 problems, 2 keys")


@pytest.mark.parametrize(
    "problem",
    [
        ConvProblem((2, 16, 6, 6), (24, 16, 3, 3), (2, 2), (1, 1), (1, 1), 1, torch.float32, False),
        # A one-channel first layer: its forward folds the padded copy's filter rows (channels-last).
        ConvProblem((2, 1, 6, 6), (8, 1, 3, 3), (1, 1), (1, 1), (1, 1), 1, torch.float32, False),
    ],
    ids=["strided", "first_layer"],
)
def test_dry_run_lists_the_keys_the_ops_select_with(problem, timing_on_cpu, monkeypatch):
    """An NCHW problem's forward, input and weight gradients: each key ``tune --dry-run`` lists is
    the one the op's launcher tunes under."""
    monkeypatch.setattr(select, "time_ms", lambda run: 1.0)  # every config ties: the heuristic wins
    x, w = (t.requires_grad_() for t in problem.tensors("cpu"))
    with select.autotuning("first_use") as records:
        y = triton_conv.conv2d(x, w, None, problem.stride, problem.padding, problem.dilation, problem.groups)
        y.backward(torch.randn_like(y))
    tuned = {record.key.split(":")[0]: record.key for record in records}
    assert tuned == problem_keys(problem, backward=True) and len(tuned) == 3


def test_malformed_shapes_file_is_a_clear_error(tmp_path, capsys):
    path = tmp_path / "shapes.json"
    path.write_text('[{"weight_shape": [1, 1, 1]}]')
    assert main(["tune", "--shapes", str(path), "--dry-run"]) == 2
    assert "problem 1 is malformed" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without a GPU")
def test_tuning_without_a_gpu_exits_2(capsys):
    assert main(["tune", "--model", "tests.test_tuning:tiny_cnn", "--input-shape", "2,3,16,16"]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err


def test_problem_spec_matches_the_module():
    problem = ConvProblem((2, 16, 16, 16), (32, 16, 3, 3), (2, 2), (1, 1), (1, 1), 1, torch.float16, True)
    assert problem.spec().output_size == (1, 8, 8)
