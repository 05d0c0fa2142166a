"""The reference GEMM of the static report: a matmul written as Triton's matmul tutorial writes it.

Pointer arithmetic hoisted out of the loop (the pointers advance by ``BLOCK_K`` each step), a
mask only on the reduction's last block, grouped program order for L2 reuse: on an H100 this
kernel runs at roughly cuBLAS's speed, so its SASS per K step is what a convolution's hot loop
should come close to on the same GEMM with the same tile.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from triton_conv.kernels.common import Launch

# Programs along M that share a column of B tiles, as in the tutorial.
GROUP_M = 8


@triton.jit
def reference_matmul_kernel(
    a_ptr,
    b_ptr,
    c_ptr,
    M,
    N,
    K,
    stride_am,
    stride_ak,
    stride_bk,
    stride_bn,
    stride_cm,
    stride_cn,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):
    """c = a @ b for one (BLOCK_M x BLOCK_N) tile of c.

    Args:
        a_ptr: (M, K), strides (stride_am, stride_ak).
        b_ptr: (K, N), strides (stride_bk, stride_bn).
        c_ptr: (M, N), strides (stride_cm, stride_cn); written in c's element type.
    """
    pid = tl.program_id(0)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    num_pid_in_group = GROUP_M * num_pid_n
    group_id = pid // num_pid_in_group
    first_pid_m = group_id * GROUP_M
    group_size_m = min(num_pid_m - first_pid_m, GROUP_M)
    pid_m = first_pid_m + ((pid % num_pid_in_group) % group_size_m)
    pid_n = (pid % num_pid_in_group) // group_size_m

    # Rows and columns wrap rather than being masked: the tutorial's trick, stores are masked.
    offs_am = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)) % M
    offs_bn = (pid_n * BLOCK_N + tl.arange(0, BLOCK_N)) % N
    offs_k = tl.arange(0, BLOCK_K)
    a_ptrs = a_ptr + (offs_am[:, None] * stride_am + offs_k[None, :] * stride_ak)
    b_ptrs = b_ptr + (offs_k[:, None] * stride_bk + offs_bn[None, :] * stride_bn)

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(0, tl.cdiv(K, BLOCK_K)):
        a = tl.load(a_ptrs, mask=offs_k[None, :] < K - k * BLOCK_K, other=0.0)
        b = tl.load(b_ptrs, mask=offs_k[:, None] < K - k * BLOCK_K, other=0.0)
        acc = tl.dot(a, b, acc)
        a_ptrs += BLOCK_K * stride_ak
        b_ptrs += BLOCK_K * stride_bk

    offs_cm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_cn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    c_ptrs = c_ptr + stride_cm * offs_cm[:, None] + stride_cn * offs_cn[None, :]
    tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=(offs_cm[:, None] < M) & (offs_cn[None, :] < N))


def plan_reference_matmul(
    m: int, n: int, k: int, dtype: torch.dtype, tile: tuple[int, int, int], num_warps: int, num_stages: int
) -> Launch:
    """The launch multiplying an (m, k) by a (k, n) row-major matrix with ``tile`` = (BLOCK_M, BLOCK_N, BLOCK_K).

    The operands are meta tensors: the launch is for compiling (``gpu_compile``), not running.
    """
    a = torch.empty(m, k, dtype=dtype, device="meta")
    b = torch.empty(k, n, dtype=dtype, device="meta")
    c = torch.empty(m, n, dtype=dtype, device="meta")
    block_m, block_n, block_k = tile
    grid = (triton.cdiv(m, block_m) * triton.cdiv(n, block_n),)
    (stride_am, stride_ak), (stride_bk, stride_bn), (stride_cm, stride_cn) = a.stride(), b.stride(), c.stride()
    args = dict(a_ptr=a, b_ptr=b, c_ptr=c, M=m, N=n, K=k, stride_am=stride_am, stride_ak=stride_ak)
    args |= dict(stride_bk=stride_bk, stride_bn=stride_bn, stride_cm=stride_cm, stride_cn=stride_cn)
    constexprs = {"BLOCK_M": block_m, "BLOCK_N": block_n, "BLOCK_K": block_k, "GROUP_M": GROUP_M}
    return Launch(reference_matmul_kernel, grid, args, constexprs, num_warps, num_stages)
