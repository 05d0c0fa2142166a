"""The implicit-GEMM kernels' reduction: one flat loop over (taps x channel blocks).

One loop rather than a tap loop around a channel loop: Triton software-pipelines only its
innermost loop, so with nested loops the copies of one tap could not overlap the products of
the previous one, and a channel loop that runs once (C/groups = BLOCK_K) overlapped nothing.
Each step advances counters instead of dividing a flat index: the kernels turn them into
scalar offsets and per-row bounds tests, and everything per row is computed once before the loop.
"""

import triton
import triton.language as tl


@triton.jit
def zero_index(INDEX_64: tl.constexpr):
    """A scalar 0 of the kernels' offset type: int64 when INDEX_64, so that counters times
    strides cannot wrap, else int32."""
    if INDEX_64:
        zero = tl.full((), 0, tl.int64)
    else:
        zero = tl.full((), 0, tl.int32)
    return zero


@triton.jit
def next_step(c0, it_t, it_r, it_s, C, COUNT_R, COUNT_S, BLOCK_K: tl.constexpr):
    """The step after channels [c0, c0 + BLOCK_K) of tap (it_t, it_r, it_s): the next block of
    the C channels, or channel 0 of the next tap (s fastest, then r, then t), as
    (c0, it_t, it_r, it_s). Taps are counted 0, 1, ... along each dimension, COUNT_R x COUNT_S
    per plane; the caller maps the counts to filter taps."""
    c0 += BLOCK_K
    tap_done = c0 >= C
    c0 = tl.where(tap_done, 0, c0)
    it_s = tl.where(tap_done, it_s + 1, it_s)
    row_done = it_s == COUNT_S
    it_s = tl.where(row_done, 0, it_s)
    it_r = tl.where(row_done, it_r + 1, it_r)
    plane_done = it_r == COUNT_R
    it_r = tl.where(plane_done, 0, it_r)
    it_t = tl.where(plane_done, it_t + 1, it_t)
    return c0, it_t, it_r, it_s


@triton.jit
def in_range(coord, size, INDEX_64: tl.constexpr):
    """0 <= coord < size for coordinates of the kernels' offset type and a size >= 0, as one
    unsigned comparison: a negative coordinate wraps to above any size."""
    if INDEX_64:
        unsigned = coord.to(tl.uint64, bitcast=True)
    else:
        unsigned = coord.to(tl.uint32, bitcast=True)
    return unsigned < size


@triton.jit
def fold_rows(mask, d, h, w, D, H, W, CHECK_D: tl.constexpr, CHECK_H: tl.constexpr, CHECK_W: tl.constexpr):
    """Give the rows outside ``mask`` (past the last pixel) a coordinate that no tap offset (>= 0)
    brings inside, along one checked dimension, so that ``rows_inside`` needs no extra test for
    them: the size itself, which an offset below 2^31 cannot wrap as unsigned."""
    if CHECK_W:
        w = tl.where(mask, w, W)
    elif CHECK_H:
        h = tl.where(mask, h, H)
    elif CHECK_D:
        d = tl.where(mask, d, D)
    return d, h, w


@triton.jit
def rows_inside(
    mask,
    d,
    h,
    w,
    D,
    H,
    W,
    CHECK_D: tl.constexpr,
    CHECK_H: tl.constexpr,
    CHECK_W: tl.constexpr,
    INDEX_64: tl.constexpr,
):
    """Which rows read inside the (D, H, W) input at coordinates (d, h, w), tested along the
    checked dimensions only; ``mask`` (rows that exist) is folded in by ``fold_rows`` when some
    dimension is checked, and returned as it is when none is."""
    rows = mask
    if CHECK_W:
        rows = in_range(w, W, INDEX_64)
        if CHECK_H:
            rows &= in_range(h, H, INDEX_64)
        if CHECK_D:
            rows &= in_range(d, D, INDEX_64)
    elif CHECK_H:
        rows = in_range(h, H, INDEX_64)
        if CHECK_D:
            rows &= in_range(d, D, INDEX_64)
    elif CHECK_D:
        rows = in_range(d, D, INDEX_64)
    return rows


@triton.jit
def first_phase_tap(phase, pad, dil, stride, TAP_STEP, TAPS):
    """The first tap along one dimension that reaches the input pixels of ``phase`` (i = phase
    mod stride) in the input gradient: the first with (phase + pad - tap * dil) divisible by the
    stride, or TAPS if none is; the others are every TAP_STEP-th (stride / gcd(stride, dil))."""
    first = tl.full((), 0, tl.int32) + TAPS  # none yet
    # Divisibility repeats every TAP_STEP taps: the first is among the first TAP_STEP, and a
    # stride far larger than the filter needs no more than its taps tried.
    for tap in range(0, tl.minimum(TAP_STEP, TAPS)):
        divisible = (phase + pad - tap * dil) % stride == 0
        first = tl.where(divisible & (tap < first), tap, first)
    return first


@triton.jit
def phase_taps(phase, pad, dil, stride, TAP_STEP, TAPS):
    """The taps along one dimension that reach the input pixels of ``phase`` (i = phase mod
    stride) in the input gradient: those with (phase + pad - tap * dil) divisible by the stride,
    every TAP_STEP-th (stride / gcd(stride, dil)) from the first. Returns the last of them, how
    many there are (0: none, the other results then unused) and the shift from the phase pixel
    index j to the output pixel the last tap reads, j + (phase + pad - last * dil) / stride."""
    first = first_phase_tap(phase, pad, dil, stride, TAP_STEP, TAPS)
    count = tl.where(first < TAPS, (TAPS - 1 - first) // TAP_STEP + 1, 0)
    last = first + (count - 1) * TAP_STEP
    return last, count, (phase + pad - last * dil) // stride


@triton.jit
def load_operands(a_ptrs, b_ptrs, rows, cols, k0, offs_k, K, EVEN_K: tl.constexpr, K_RUN: tl.constexpr):
    """One step's operands: a [BLOCK_M, BLOCK_K] read where ``rows`` (per row) and b
    [BLOCK_K, BLOCK_N] where ``cols`` (per column), both only at reduction indices k0 + offs_k
    below K unless EVEN_K (K a multiple of BLOCK_K, no test); zeros elsewhere. K and k0 are
    multiples of K_RUN: the test is constant over runs of K_RUN indices, which the compiler is
    told (it cannot see it for a K not divisible by 16), so that masked loads stay vectors."""
    mask_a = rows[:, None]
    mask_b = cols[None, :]
    if not EVEN_K:
        mask_k = k0 + offs_k < K
        if K_RUN > 1:
            mask_k = tl.max_constancy(mask_k, K_RUN)
        mask_a &= mask_k[None, :]
        mask_b &= mask_k[:, None]
    return tl.load(a_ptrs, mask=mask_a, other=0.0), tl.load(b_ptrs, mask=mask_b, other=0.0)
