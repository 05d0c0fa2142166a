"""Where the kernels run in this process (on a GPU, or on the CPU through Triton's interpreter),
and the process-wide warnings given once."""

import os
import threading
import warnings

import triton

# Triton reads this when a kernel is decorated, so it must be set before triton_conv is imported.
INTERPRETER = os.environ.get("TRITON_INTERPRET", "0") == "1"
# (major, minor) of the Triton in use, for choices the compiled code showed to differ by version.
TRITON_VERSION = tuple(int(part) for part in triton.__version__.split(".")[:2])
# Triton's coalescing spreads a warp's lanes along a tile's most contiguous dimensions first;
# between dimensions it cannot tell apart it goes from the tile's first dimension under 3.6 and
# from its last under 3.9 (read from sm_90 compiles; 3.7 and 3.8 not checked).
COALESCE_TIES_TO_LAST_DIMENSION = TRITON_VERSION >= (3, 9)

_warned: set[object] = set()
_warned_lock = threading.Lock()


def warn_once(key: object, message: str, stacklevel: int) -> None:
    """Warn ``message`` the first time ``key`` is seen in this process, whichever thread sees it.
    ``stacklevel`` counts as for ``warnings.warn`` called in the caller's place."""
    with _warned_lock:
        if key in _warned:
            return
        _warned.add(key)
    warnings.warn(message, stacklevel=stacklevel + 1)
