"""Configuration spaces and their selection."""

from .configs import IMPLICIT_GEMM_CONFIGS, KernelConfig, heuristic_config
from .kinds import KernelKind

__all__ = ["IMPLICIT_GEMM_CONFIGS", "KernelConfig", "KernelKind", "heuristic_config"]
