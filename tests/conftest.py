"""Suite-wide settings."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """The tests' tensors are tiny: one thread is fastest, and OpenMP threads spinning against other busy
    processes can make them many times slower (subprocesses of the end-to-end tests are not affected)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
