import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These small tensors gain little from a second thread, while two OpenMP threads on a
    shared 2-core machine slow down several-fold; run the module on one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
