"""Suite-wide settings."""

import logging
import os

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def empty_torch_cache(tmp_path_factory):
    """An empty torch cache for the whole suite, subprocesses included: ImageNet weights that happen to be in the
    user's cache (VGG19, LPIPS backbones) would change what the tests see (the demo's VGG is random here)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TORCH_HOME", str(tmp_path_factory.mktemp("torch_home")))
        yield


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """The tests' tensors are tiny: one thread is fastest, and OpenMP threads spinning against other busy
    processes can make them many times slower (subprocesses of the end-to-end tests are not affected)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def package_log(caplog):
    """caplog for the package's logger, which setup_logging (run by earlier in-process tests) detaches from the
    root logger that caplog listens to."""
    logger = logging.getLogger("esrgan")
    logger.addHandler(caplog.handler)
    yield caplog
    logger.removeHandler(caplog.handler)


class _ShellCommand:
    """Unpickling it runs a shell command (a harmless one): what a weights file must never be allowed to do."""

    def __reduce__(self):
        return os.system, ("true",)


@pytest.fixture
def code_running_pickle() -> _ShellCommand:
    return _ShellCommand()
