"""Index helpers shared by the convolution kernels."""

import triton
import triton.language as tl  # noqa: F401  (the interpreter patches tl in every jit function's globals)


@triton.jit
def program_ids(INDEX_64: tl.constexpr):
    """The program's ids along grid axes 0, 1 and 2; int64 if INDEX_64, before any product with
    a block size or a stride, which would wrap in int32."""
    pid_0 = tl.program_id(0)
    pid_1 = tl.program_id(1)
    pid_2 = tl.program_id(2)
    if INDEX_64:
        pid_0 = pid_0.to(tl.int64)
        pid_1 = pid_1.to(tl.int64)
        pid_2 = pid_2.to(tl.int64)
    return pid_0, pid_1, pid_2


@triton.jit
def unravel_pixels(offs, D, H, W):
    """Split flat pixel indices over (N, D, H, W), W fastest, into their four coordinates."""
    w = offs % W
    rest = offs // W
    h = rest % H
    rest = rest // H
    d = rest % D
    n = rest // D
    return n, d, h, w


@triton.jit
def unravel_pixels_fast(offs, D, H, W, magics, shifts, INDEX_64: tl.constexpr):
    """``unravel_pixels`` with each division by a size a multiply-high (``divmod_by``); magics
    and shifts are ``arguments.divisors``' for (D, H, W). int64 offsets divide as usual."""
    # One return after both branches: Triton lowers the code after a return inside a constexpr
    # branch too, and divmod_by takes no int64.
    if INDEX_64:
        n, d, h, w = unravel_pixels(offs, D, H, W)
    else:
        magic_d, magic_h, magic_w = magics
        shift_d, shift_h, shift_w = shifts
        rest, w = divmod_by(offs, W, magic_w, shift_w)
        rest, h = divmod_by(rest, H, magic_h, shift_h)
        n, d = divmod_by(rest, D, magic_d, shift_d)
    return n, d, h, w


@triton.jit
def divmod_by(x, divisor, magic, shift):
    """(x // divisor, x % divisor) for int32 x in [0, 2**31) and a divisor of at least 1, with
    (magic, shift) its ``arguments.division_magic``: q = (mulhi(x, magic) + x) >> shift, the
    round-up method of Granlund and Montgomery, exact for every such x. A division by a runtime
    value costs a reciprocal, a refinement and two corrections, about 15 instructions."""
    ux = x.to(tl.uint32, bitcast=True)
    high = tl.umulhi(ux, tl.cast(magic, tl.uint32, bitcast=True))
    q = ((high + ux) >> tl.cast(shift, tl.uint32)).to(tl.int32, bitcast=True)
    return q, x - q * divisor


@triton.jit
def advance_coordinates(n, d, h, w, step_n, step_d, step_h, step_w, D, H, W):
    """Coordinates (n, d, h, w) over (N, D, H, W), W fastest, moved on by the index whose
    coordinates are (step_n, step_d, step_h, step_w), each step under its dimension: an addition
    with carries, no division."""
    w += step_w
    carry = w >= W
    w = tl.where(carry, w - W, w)
    h += step_h + carry.to(h.dtype)
    carry = h >= H
    h = tl.where(carry, h - H, h)
    d += step_d + carry.to(d.dtype)
    carry = d >= D
    d = tl.where(carry, d - D, d)
    n += step_n + carry.to(n.dtype)
    return n, d, h, w


@triton.jit
def unravel_tap(tap, R, S):
    """Split a flat filter tap index over (T, R, S) into (t, r, s)."""
    s = tap % S
    rest = tap // S
    return rest // R, rest % R, s


@triton.jit
def inside(d, h, w, D, H, W):
    """Whether input coordinates (d, h, w) lie inside the (D, H, W) input, i.e. not in padding."""
    return (d >= 0) & (d < D) & (h >= 0) & (h < H) & (w >= 0) & (w < W)
