"""Where the kernels run in this process: on a GPU, or on the CPU through Triton's interpreter."""

import os

# Triton reads this when a kernel is decorated, so it must be set before triton_conv is imported.
INTERPRETER = os.environ.get("TRITON_INTERPRET", "0") == "1"
