"""Index helpers shared by the convolution kernels."""

import triton
import triton.language as tl  # noqa: F401  (the interpreter patches tl in every jit function's globals)


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
def unravel_tap(tap, R, S):
    """Split a flat filter tap index over (T, R, S) into (t, r, s)."""
    s = tap % S
    rest = tap // S
    return rest // R, rest % R, s


@triton.jit
def inside(d, h, w, D, H, W):
    """Whether input coordinates (d, h, w) lie inside the (D, H, W) input, i.e. not in padding."""
    return (d >= 0) & (d < D) & (h >= 0) & (h < H) & (w >= 0) & (w < W)
