"""Configuration spaces and their selection."""

from .configs import IMPLICIT_GEMM_CONFIGS, KernelConfig, heuristic_config

__all__ = ["IMPLICIT_GEMM_CONFIGS", "KernelConfig", "heuristic_config"]
