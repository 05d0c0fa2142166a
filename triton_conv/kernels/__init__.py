"""Triton kernels and their launchers, one file per algorithm."""

from .common import INTERPRETER
from .implicit_gemm_forward import implicit_gemm_forward

__all__ = ["INTERPRETER", "implicit_gemm_forward"]
