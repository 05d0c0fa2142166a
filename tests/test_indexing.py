"""The index helpers: division by a runtime size through a multiply-high (``indexing.divmod_by``)."""

from __future__ import annotations

import math

import pytest
import torch
import triton
import triton.language as tl

from triton_conv.kernels import arguments
from triton_conv.kernels.indexing import divmod_by, unravel_pixels_fast

BLOCK = 1024


@triton.jit
def divmod_kernel(x_ptr, q_ptr, r_ptr, numel, divisor, magic, shift, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(x_ptr + offs, mask=offs < numel)
    q, r = divmod_by(x, divisor, magic, shift)
    tl.store(q_ptr + offs, q, mask=offs < numel)
    tl.store(r_ptr + offs, r, mask=offs < numel)


@triton.jit
def unravel_kernel(x_ptr, out_ptr, numel, sizes, magics, shifts, INDEX_64: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(x_ptr + offs, mask=offs < numel)
    D, H, W = sizes
    n, d, h, w = unravel_pixels_fast(x, D, H, W, magics, shifts, INDEX_64)
    tl.store(out_ptr + offs * 4, n, mask=offs < numel)
    tl.store(out_ptr + offs * 4 + 1, d, mask=offs < numel)
    tl.store(out_ptr + offs * 4 + 2, h, mask=offs < numel)
    tl.store(out_ptr + offs * 4 + 3, w, mask=offs < numel)


def dividends() -> torch.Tensor:
    """Every int32 from 0 to 4999, random ones up to 2**31 - 1, and the largest two."""
    random = torch.randint(0, 2**31 - 1, (6000,), generator=torch.Generator().manual_seed(0))
    return torch.cat([torch.arange(5000), random, torch.tensor([2**31 - 2, 2**31 - 1])]).to(torch.int32)


# 1 and 2 (magic 1: Triton makes it a constant), powers of two, the patch grid's sizes (7, 28),
# primes, and the extremes of the range.
DIVISORS = (1, 2, 3, 7, 16, 28, 56, 97, 1000, 65537, 2**20 + 3, 2**30, 2**31 - 1)


@pytest.mark.parametrize("divisor", DIVISORS)
def test_divmod_by_matches_integer_division(divisor: int):
    x = dividends()
    q, r = torch.empty_like(x), torch.empty_like(x)
    magic, shift = arguments.division_magic(divisor)
    assert -(2**31) <= magic < 2**31  # an int32 argument
    divmod_kernel[(triton.cdiv(x.numel(), BLOCK),)](x, q, r, x.numel(), divisor, magic, shift, BLOCK=BLOCK)
    assert torch.equal(q.long(), x.long() // divisor)
    assert torch.equal(r.long(), x.long() % divisor)


@pytest.mark.parametrize("sizes", [(3, 28, 7), (1, 2, 7)], ids=str)  # 1 and 2: magic 1, a constant
@pytest.mark.parametrize("index_64", [False, True])
def test_unravel_pixels_fast_matches_unravel(index_64: bool, sizes: tuple[int, int, int]):
    x = torch.arange(0, 5 * math.prod(sizes), dtype=torch.int64 if index_64 else torch.int32)
    out = torch.empty((x.numel(), 4), dtype=x.dtype)
    divisors = arguments.divisors("sizes", sizes)
    unravel_kernel[(triton.cdiv(x.numel(), BLOCK),)](
        x, out, x.numel(), sizes, divisors["sizes_magics"], divisors["sizes_shifts"], INDEX_64=index_64, BLOCK=BLOCK
    )
    expected = torch.stack(torch.unravel_index(x.long(), (5, *sizes)), dim=1)
    assert torch.equal(out.long(), expected)
