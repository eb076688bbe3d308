"""Suite-wide settings."""

import errno
import io
import logging
import os
from pathlib import Path

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


@pytest.fixture
def find_processes():
    """The processes (pids, from Linux's /proc) of a parent or of a process group."""

    def find(*, parent: int | None = None, group: int | None = None) -> list[int]:
        found = []
        for entry in (e for e in Path("/proc").iterdir() if e.name.isdigit()):
            try:  # stat: pid (comm) state ppid pgrp ...; comm may hold spaces and parentheses
                _, ppid, pgrp = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:3]
            except (OSError, ValueError):
                continue
            if (parent is None or int(ppid) == parent) and (group is None or int(pgrp) == group):
                found.append(int(entry.name))
        return found

    return find


class _FullDisk(io.FileIO):
    """A file on a disk that fills after `room` bytes, as a write reports it: OSError ENOSPC without a file name."""

    def __init__(self, path, mode: str, room: int) -> None:
        super().__init__(path, mode.replace("b", ""))
        self.room = room

    def write(self, data) -> int:
        if len(data) > self.room:
            super().write(bytes(data)[: self.room])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(data)
        return super().write(data)


@pytest.fixture
def full_disk(monkeypatch):
    """Call it to fill the disk for the atomic writes of esrgan.utils.files (checkpoints, weights files, markers,
    logs' option files): from then on, each such file fails to write after `room` bytes."""
    from esrgan.utils import files

    def fill(room: int = 10) -> None:
        monkeypatch.setattr(files, "open", lambda path, mode: _FullDisk(path, mode, room), raising=False)

    return fill
