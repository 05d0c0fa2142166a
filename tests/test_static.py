"""``triton-conv bench --static``, the speed proxy read from code compiled for sm_90, on CPU.

The end-to-end test plans suite shapes 3 (1x1) and 12 (depthwise) forward as the ops would on
an H100, compiles them and checks the properties the report exists for; it prints today's
numbers rather than asserting targets the kernels do not meet yet.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch
from triton_conv.perf import cli
from triton_conv.perf.compiled_code import dot_loop, hot_loop, parse_sass
from triton_conv.perf.static import GEMM, gemm_of
from triton_conv.perf.suite import SHAPES_BY_NUMBER

from triton_conv.kernels import dispatch
from triton_conv.kernels.common import recording_launches
from triton_conv.spec import conv_spec

pytestmark = [pytest.mark.bench, pytest.mark.compile]

# A loop (0x30 to 0x60) holding a tensor-core MMA, inside a loop from 0x10 to 0x70.
SASS = """
        /*0000*/                   LDC R1, c[0x0][0x28] ;                     /* 0x00000a00ff017b82 */
        /*0010*/                   IMAD R2, R3, R4, RZ ;                      /* 0x0000000403027224 */
        /*0020*/                   LDGSTS.E.BYPASS.128 [R5], desc[UR4][R6.64] ; /* 0x0000000006057fae */
        /*0030*/                   HGMMA.64x128x16.F32.BF16 R24, gdesc[UR8], R24 ; /* 0x01e00000081879f0 */
        /*0040*/                   ISETP.GE.AND P0, PT, R2, 0x40, PT ;        /* 0x000000400200780c */
        /*0050*/                   SEL R7, R8, RZ, P0 ;                       /* 0x000000ff08077207 */
        /*0060*/              @!P0 BRA 0x30 ;                                 /* 0xfffffff80020d947 */
        /*0070*/               @P1 BRA 0x10 ;                                 /* 0xffffffe400cc1947 */
        /*0080*/                   EXIT ;                                     /* 0x000000000000794d */
        /*0090*/                   BRA 0x90;                                  /* 0xfffffffc00fc7947 */
"""

TTGIR_PER_TAP = """
    %acc = scf.for %tap = %c0 to %TAPS step %c1 iter_args(%a = %cst) -> (tensor<128x128xf32, #mma>) : i32 {
      %acc_2 = scf.for %c = %c0 to %C_G step %c64 iter_args(%b = %a) -> (tensor<128x128xf32, #mma>) : i32 {
        %x = ttg.async_copy_global_to_local %p, %q mask %m {contiguity = 8 : i32} : tensor<128x64x!tt.ptr<bf16>>
        %d = ttng.warp_group_dot %s, %t, %b {isAsync = true} : !ttg.memdesc<128x64xbf16>
        %w:3 = ttng.warp_group_dot_wait %d, %s, %t {pendings = 1 : i32} : tensor<128x128xf32, #mma>
        scf.yield %w#0 : tensor<128x128xf32, #mma>
      }
      %e = ttng.warp_group_dot_wait %acc_2 {pendings = 0 : i32} : tensor<128x128xf32, #mma>
      scf.yield %e : tensor<128x128xf32, #mma>
    }
"""

TTGIR_PREFETCH = """
    %r:2 = scf.for %i = %c1 to %n step %c1 iter_args(%acc = %z, %a = %a0) -> (tensor<8x64x16xf32, #mma>) : i32 {
      %next = tt.load %p, %m : tensor<64x16x8x!tt.ptr<bf16>, #blocked1>
      %d = tt.dot %a, %b, %acc : tensor<8x64x16xbf16> * tensor<8x16x16xbf16> -> tensor<8x64x16xf32, #mma>
      scf.yield %d, %next : tensor<8x64x16xf32, #mma>, tensor<64x16x8xbf16, #blocked1>
    }
"""

TTGIR_IF_YIELD = """
    %r:2 = scf.for %i = %c1 to %n step %c1 iter_args(%acc = %z, %a = %a0) -> (tensor<8x64x16xf32, #mma>) : i32 {
      %v = scf.if %c -> (tensor<64x16x8xbf16, #blocked1>) {
        %next = tt.load %p, %m : tensor<64x16x8x!tt.ptr<bf16>, #blocked1>
        scf.yield %next : tensor<64x16x8xbf16, #blocked1>
      } else {
        scf.yield %a : tensor<64x16x8xbf16, #blocked1>
      }
      %d = tt.dot %v, %b, %acc : tensor<8x64x16xbf16> * tensor<8x16x16xbf16> -> tensor<8x64x16xf32, #mma>
      scf.yield %d, %a : tensor<8x64x16xf32, #mma>, tensor<64x16x8xbf16, #blocked1>
    }
"""


def test_recording_launches_plans_without_running():
    x = torch.randn(1, 16, 5, 5)
    w = torch.randn(8, 16, 3, 3)
    spec = conv_spec(x, w, None, stride=1, padding=1, dilation=1, groups=1, ndim=2)
    y = torch.zeros(spec.out_shape)
    with recording_launches() as launches:
        dispatch.forward(x, w, None, spec, y)
    assert launches and not y.any()  # planned, nothing ran
    for launch in launches:  # outside the context the same launches run
        launch()
    torch.testing.assert_close(y, torch.nn.functional.conv2d(x, w, padding=1), atol=1e-4, rtol=1e-4)


def test_sass_hot_loop():
    instructions = parse_sass(SASS)
    assert [i.base for i in instructions][:4] == ["LDC", "IMAD", "LDGSTS", "HGMMA"]
    loop = hot_loop(instructions)
    assert loop is not None
    assert (loop.body, loop.mma, loop.enclosing_loops, loop.enclosing_body) == (4, 1, 1, 3)
    assert loop.tensor_core_share == 0.25


def test_ttgir_pipelining_verdicts():
    nested = dot_loop(TTGIR_PER_TAP)
    assert nested is not None and nested.pipelined and nested.verdict == "per tap"
    # The same dot loop on its own: one pipelined loop.
    flat = "\n".join(TTGIR_PER_TAP.strip().splitlines()[1:-3])
    assert dot_loop(flat).verdict == "across taps"
    # Without asynchronous loads nothing overlaps.
    assert dot_loop(flat.replace("ttg.async_copy_global_to_local", "tt.load")).verdict == "no"
    assert dot_loop("%y = arith.addf %a, %b : f32") is None
    # Loads into registers for the next iteration (the patch kernels' own prefetch) overlap too.
    assert dot_loop(TTGIR_PREFETCH).verdict == "across taps"
    assert dot_loop(TTGIR_PREFETCH.replace("%d, %next", "%d, %a")).verdict == "no"
    # A load transposed, reshaped, joined (with anything) or converted on its way to the next
    # iteration is still prefetched.
    for rearranged in (
        "tt.trans %next {order = array<i32: 1, 0, 2>}",
        "tt.reshape %next : tensor<64x16x8xbf16, #blocked1> -> tensor<64x128xbf16, #blocked2>",
        "tt.join %a, %next : tensor<64x16x8xbf16, #blocked1> -> tensor<64x16x8x2xbf16, #blocked3>",
        "ttg.convert_layout %next : tensor<64x16x8xbf16, #blocked1> -> tensor<64x16x8xbf16, #blocked2>",
    ):
        moved = TTGIR_PREFETCH.replace("      %d = tt.dot", f"      %t = {rearranged}\n      %d = tt.dot")
        assert dot_loop(moved.replace("%d, %next", "%d, %t")).verdict == "across taps", rearranged
    # Arithmetic on a load is not a rearrangement.
    added = TTGIR_PREFETCH.replace("      %d = tt.dot", "      %t = arith.addf %next, %next\n      %d = tt.dot")
    assert dot_loop(added.replace("%d, %next", "%d, %t")).verdict == "no"
    # A load yielded by an scf.if inside the loop is not carried to the next iteration.
    assert dot_loop(TTGIR_IF_YIELD).verdict == "no"


def test_gemm_of_passes():
    shape = SHAPES_BY_NUMBER[2]  # 128, 64 -> 64, 56x56, 3x3, padding 1
    pixels = 128 * 56 * 56
    spec = shape.geometry()
    assert gemm_of(spec, "F") == gemm_of(spec, "D") == GEMM(pixels, 64, 64 * 9, 1)
    assert gemm_of(spec, "W") == GEMM(64, 64 * 9, pixels, 1)


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_static_report_end_to_end(tmp_path: Path, capfd: pytest.CaptureFixture[str]):
    """Shapes 3 (1x1) and 12 (depthwise) forward, channels-last, as an H100 would run them."""
    argv = ("--static", "--shapes", "3,12", "--passes", "F", "--layout", "channels_last", "--dump", str(tmp_path))
    assert cli.run(_args(*argv)) == 0
    table = capfd.readouterr().out
    with capfd.disabled():
        print(table)  # today's numbers, for the log
    index = json.loads((tmp_path / "index.json").read_text())
    rows = {(r["shape"], r["kernel"], r["reference"]): r for r in index}
    assert set(rows) == {
        (3, "implicit_gemm_forward_kernel", False),
        (3, "reference_matmul_kernel", True),
        (12, "direct_forward_kernel", False),
    }
    for row in index:
        assert row["registers"] > 0 and row["spill_bytes"] == 0 and not row["error"]
        assert row["issue_us"] > 0 and row["per_k_step"] > 0
        for ext in ("ttgir", "ptx", "sass"):
            assert (tmp_path / row[ext]).read_text()
    ours = rows[(3, "implicit_gemm_forward_kernel", False)]
    reference = rows[(3, "reference_matmul_kernel", True)]
    assert ours["uses_wgmma"] and reference["uses_wgmma"]
    assert ours["pipelined"] == reference["pipelined"] == "across taps"  # a 1x1 filter: no tap loop
    assert 0 < ours["tensor_core_share"] < 1 and ours["ratio_to_reference"] > 0
    # The matrix unit's time: the tiles' multiply-adds (256 output channels, 64 deep, so only the
    # pixels' last tile is padded) at the dense peak, above the roofline's compute time.
    flops = 2 * 128 * 56 * 56 * 64 * 256
    assert flops / 989e12 * 1e6 <= ours["matrix_us"] <= 1.01 * flops / 989e12 * 1e6
    assert rows[(12, "direct_forward_kernel", False)]["matrix_us"] is None  # CUDA cores only
    assert ours["grid"] == [-(-128 * 56 * 56 // ours["config"]["BLOCK_M"]), 256 // ours["config"]["BLOCK_N"], 1]
    depthwise = rows[(12, "direct_forward_kernel", False)]
    assert depthwise["per_fma"] > 0 and depthwise["tensor_core_share"] is None
    # Its bfloat16 vectors widen at one instruction per element: no byte permutes in the loop.
    loop = hot_loop(parse_sass((tmp_path / depthwise["sass"]).read_text()))
    assert loop is not None and "PRMT" not in loop.opcodes, loop.opcodes


@pytest.mark.parametrize("pass_", ["F", "D", "W"])
def test_conformer_depthwise_runs_on_the_matrix_unit(pass_, tmp_path: Path, capfd: pytest.CaptureFixture[str]):
    """Suite shape 20 (1-D depthwise, 31 taps, NCL) in bf16, as an H100 would run it: the band
    kernels, pipelined, on wgmma, no spills, at most 4 instructions per useful FMA, and an
    issue-bound time within 1.5x of the memory roofline (band matrices, the gated recomputation
    of non-finite tiles and split-K sum included)."""
    argv = ("--static", "--shapes", "20", "--passes", pass_, "--layout", "contiguous", "--dump", str(tmp_path))
    assert cli.run(_args(*argv)) == 0
    capfd.readouterr()
    rows = json.loads((tmp_path / "index.json").read_text())
    (band,) = [r for r in rows if r["kernel"] in ("banded_forward_kernel", "banded_weight_grad_kernel")]
    assert band["uses_wgmma"] and band["spill_bytes"] == 0 and band["pipelined"] == "across taps", band
    if band["per_fma"] is not None:  # the forward's loop unrolls completely (one filter row)
        assert band["per_fma"] <= 4, band["per_fma"]
    issue = sum(r["issue_us"] for r in rows)
    assert issue <= 1.5 * band["roofline_us"], (issue, band["roofline_us"])
    # The band's zeros included, the matrix unit is not what bounds it either.
    assert 0 < band["matrix_us"] <= band["roofline_us"], band


def test_stem_forward_folds_filter_rows(tmp_path: Path, capfd: pytest.CaptureFixture[str]):
    """Suite shape 1 (ResNet's stem: 3 channels, 7x7, stride 2, padding 3) forward, bf16,
    channels-last, as an H100 would run it: a padded 4-channel copy, then the GEMM over each
    filter row's 7 columns folded into 28 channels (one step per tap): pipelined across taps,
    async copies of whole channel runs (no scalar loads), wgmma, no spills, and at most 2x the
    matmul tutorial's instructions per step on the same GEMM."""
    argv = ("--static", "--shapes", "1", "--passes", "F", "--layout", "channels_last", "--dump", str(tmp_path))
    assert cli.run(_args(*argv)) == 0
    capfd.readouterr()
    rows = {r["kernel"]: r for r in json.loads((tmp_path / "index.json").read_text())}
    assert set(rows) == {"pad_input_kernel", "implicit_gemm_forward_kernel", "reference_matmul_kernel"}
    gemm = rows["implicit_gemm_forward_kernel"]
    assert gemm["uses_wgmma"] and gemm["spill_bytes"] == 0 and gemm["pipelined"] == "across taps", gemm
    assert gemm["ratio_to_reference"] <= 2, gemm
    loop = hot_loop(parse_sass((tmp_path / gemm["sass"]).read_text()))
    assert loop is not None and "LDGSTS" in loop.opcodes and "LDG" not in loop.opcodes, loop.opcodes


def test_strided_depthwise_loads_column_pairs(tmp_path: Path, capfd: pytest.CaptureFixture[str]):
    """Suite shape 13 (depthwise 3x3, stride 2) forward in the default layout (NCHW), bf16, as an
    H100 would run it: the direct kernel reads each thread's 17 input columns per filter row as 9
    32-bit pairs (no 16-bit loads but the weights'), the compiler unrolls the 3 filter rows, at
    most 4 SASS per FMA, stores of column pairs, and the issue-bound time is below the memory
    roofline (it was 97 us against 80 with 16-bit loads)."""
    argv = ("--static", "--shapes", "13", "--passes", "F", "--layout", "contiguous", "--dump", str(tmp_path))
    assert cli.run(_args(*argv)) == 0
    capfd.readouterr()
    (row,) = json.loads((tmp_path / "index.json").read_text())
    assert row["kernel"] == "direct_forward_kernel", row
    assert row["spill_bytes"] == 0 and row["issue_us"] < row["roofline_us"], row
    assert row["per_fma"] <= 4, row["per_fma"]  # over the unrolled span: setup included
    sass = parse_sass((tmp_path / row["sass"]).read_text())
    loads = [i.opcode for i in sass if i.base == "LDG"]
    assert loads.count("LDG.E") == 27 and loads.count("LDG.E.U16") == 9, loads
    # A thread's 8 output columns: 4 stores of column pairs.
    assert [i.opcode for i in sass if i.base == "STG"] == ["STG.E"] * 4


def test_strided_depthwise_input_grad_loads_column_pairs(tmp_path: Path, capfd: pytest.CaptureFixture[str]):
    """Suite shape 13's input gradient in the default layout, bf16, as an H100 would run it: each
    program takes the input rows of one stride phase, so only the filter rows that reach them
    run, and each thread reads its 9 dy columns per filter row as 5 32-bit pairs: per filter row
    5 pair loads and the 3 weights' 16-bit loads, at most 4 SASS per FMA (4.4 with 16-bit loads),
    and stores of column pairs."""
    argv = ("--static", "--shapes", "13", "--passes", "D", "--layout", "contiguous", "--dump", str(tmp_path))
    assert cli.run(_args(*argv)) == 0
    capfd.readouterr()
    (row,) = json.loads((tmp_path / "index.json").read_text())
    assert row["kernel"] == "direct_input_grad_kernel", row
    # A stride of 2 along H: 2 row phases, each 128 images x 56 rows x 7 groups of 16 columns, 4 a block.
    assert row["grid"][0] == 2 * 128 * 56 * 7 // 4, row["grid"]
    assert row["spill_bytes"] == 0 and row["per_fma"] <= 4, row
    loads = [i.opcode for i in parse_sass((tmp_path / row["sass"]).read_text()) if i.base == "LDG"]
    assert loads.count("LDG.E") > 0 and loads.count("LDG.E") * 3 == loads.count("LDG.E.U16") * 5, loads
    # A thread's 16 input columns: 8 stores of column pairs.
    assert [i.opcode for i in parse_sass((tmp_path / row["sass"]).read_text()) if i.base == "STG"] == ["STG.E"] * 8


def test_patch_weight_grad_within_the_bar(tmp_path: Path, capfd: pytest.CaptureFixture[str]):
    """Suite shape 15 (ConvNeXt's 7x7 depthwise, 56x56) weight gradient, channels-last, bf16, as
    an H100 would run it: the patch kernel, no spills, no 2-byte shared-memory loads, and the
    larger of its issue and shared-memory times within 1.5x of the memory roofline (1.67x while
    an image's last block of patches took 4 patches of one image, not of 8)."""
    argv = ("--static", "--shapes", "15", "--passes", "W", "--layout", "channels_last", "--dump", str(tmp_path))
    assert cli.run(_args(*argv)) == 0
    capfd.readouterr()
    rows = {r["kernel"]: r for r in json.loads((tmp_path / "index.json").read_text())}
    patch = rows["patch_weight_grad_kernel"]
    assert patch["spill_bytes"] == 0 and patch["narrow_shared_loads"] == 0, patch
    bound = sum(max(r["issue_us"], r["shared_us"] or 0) for r in rows.values())
    assert bound <= 1.5 * patch["roofline_us"], (bound, patch["roofline_us"])
