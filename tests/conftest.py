"""Fixtures shared across the test tree."""
from __future__ import annotations

import pytest


@pytest.fixture
def one_thread():
    """Run the test with one torch thread (vision and LDS tests: results must not depend on the
    machine's core count, and small matmuls are faster single-threaded)."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
