"""Test session setup.

Without CUDA, the Triton kernels run under the Triton interpreter; TRITON_INTERPRET must be set
before any kernel is defined, so it is set here, before the tests import sigcell's kernels.
"""

import os

import torch

if "TRITON_INTERPRET" not in os.environ and not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"
