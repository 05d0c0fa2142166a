"""Triton kernels and their launchers, one file per algorithm."""

from .common import INTERPRETER
from .implicit_gemm_forward import implicit_gemm_forward
from .implicit_gemm_input_grad import implicit_gemm_input_grad
from .implicit_gemm_weight_grad import implicit_gemm_weight_grad

__all__ = ["INTERPRETER", "implicit_gemm_forward", "implicit_gemm_input_grad", "implicit_gemm_weight_grad"]
