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
