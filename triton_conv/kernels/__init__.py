"""Triton kernels and their launchers, one file per algorithm; ``dispatch`` picks the algorithm."""

from . import dispatch
from .common import INTERPRETER

__all__ = ["INTERPRETER", "dispatch"]
