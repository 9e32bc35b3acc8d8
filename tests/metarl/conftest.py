"""Fixtures shared by the learning tests."""

import pytest
import torch


@pytest.fixture
def one_torch_thread():
    """Small networks: one intra-op thread is fastest, and avoids oversubscribing a shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
