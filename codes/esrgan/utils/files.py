"""Files: atomic writes, claimed output folders, and what a load error or a cached download is called.

Atomic writes write a hidden temporary file beside the target, flush it to disk and rename it over the target: a
crash at any moment leaves either the old file or the new one, never a truncated one; a write that fails (a full
disk) raises the OSError that says why, naming the target. `claimed` keeps a second process out of a run's or
results folder while one writes there. `blocked_global` and
`error_summary` turn a refused or failed `torch.load` into one line for an error message;
`torch_hub_cache_file` is where torch.hub keeps a downloaded file."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, TextIO

import torch

log = logging.getLogger(__name__)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """A temporary path to write (it keeps `path`'s extension, which some writers need); it replaces `path`
    only when the block ends without error. An OSError about the temporary names `path` instead."""
    path = Path(path)
    tmp = None
    try:
        with _naming(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
            os.close(fd)
        try:
            yield Path(tmp)
        except OSError as err:
            if err.filename is None or not _is_temporary(Path(err.filename), path):
                raise  # about another file, or about none: the caller's to say
            raise _named(err, path) from err
        with _naming(path):
            # mkstemp makes owner-only files, and so do writers that replace the file themselves (safetensors):
            # the usual permissions, once written.
            os.chmod(tmp, 0o666 & ~_umask())
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, path)
            _fsync_directory(path.parent)
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


@contextmanager
def _naming(path: Path) -> Iterator[None]:
    """OSErrors of writing `path` (through its temporary) name `path`: a full disk's, which name no file, and
    those about the temporary. One about another file (a file where a folder must be made) passes as it is."""
    try:
        yield
    except OSError as err:
        if err.filename is not None and not _is_temporary(Path(err.filename), path):
            raise
        raise _named(err, path) from err


def _named(err: OSError, path: Path) -> OSError:
    if err.errno is None:
        return OSError(f"cannot write {path}: {err}")
    return OSError(err.errno, err.strerror, str(path))


@contextmanager
def claimed(folder: Path, program: str) -> Iterator[None]:
    """Hold `folder` (a run's or a results folder) for this process while the block runs: a second process that
    would write there (a job started twice, a scheduler's restart while the first still runs) is refused rather
    than moving the folder aside under the first, or writing the same files. The lock is on the hidden file
    `.<folder name>.lock` beside the folder (which a run moves aside, and so cannot hold it), with the holder's
    process id and host for the message, and is deleted on release. Where no lock can be had (not POSIX, a file
    system without locks, a folder this process cannot write), nothing is held."""
    made = [p for p in [folder.parent, *folder.parent.parents] if not p.exists()]  # to remove again if unused
    lock = folder.parent / f".{folder.name}.lock"
    fh = None
    try:
        fh = _locked(lock, folder, program)
        yield
    finally:
        if fh is not None:
            with contextlib.suppress(OSError):
                lock.unlink(missing_ok=True)
            fh.close()
        for parent in made:  # innermost first; a folder that holds something stays
            try:
                parent.rmdir()
            except OSError:
                break


def _locked(lock: Path, folder: Path, program: str) -> TextIO | None:
    """The file `lock`, open and exclusively locked, with this process's id and host in it; None where no lock
    can be had."""
    try:
        import fcntl
    except ImportError:
        return None
    for _ in range(100):  # each round lost to another process's release, which removes its file and folders
        try:
            lock.parent.mkdir(parents=True, exist_ok=True)
            fh = open(lock, "a+", encoding="utf-8")  # noqa: SIM115 (held open until the claim's release)
        except FileNotFoundError:
            continue
        except OSError as err:  # a read-only root; a stale lock file of another user
            log.debug("cannot open %s (%s): runs of this name are not guarded", lock, err)
            return None
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            pid, *host = fh.read().split() or ["unknown"]
            fh.close()
            raise OSError(f"{folder} is in use by another {program} ({_holder(pid, host[0] if host else None)}); "
                          "wait for it to end or stop it, or give this one another name") from None
        except OSError as err:  # a file system without flock (Lustre without -o flock, some FUSE mounts)
            fh.close()
            with contextlib.suppress(OSError):
                lock.unlink(missing_ok=True)
            log.warning("cannot lock %s (%s): a second run of this name at the same time would not be refused",
                        lock, err)
            return None
        try:
            if os.fstat(fh.fileno()).st_ino == os.stat(lock).st_ino:
                fh.seek(0)
                fh.truncate()
                fh.write(f"{os.getpid()} {socket.gethostname()}\n")
                fh.flush()
                return fh
        except FileNotFoundError:
            pass
        fh.close()  # its holder deleted it as this process opened it: lock the one at the path now
    raise OSError(f"cannot claim {folder}: {lock} keeps changing; is another {program} starting and stopping there?")


def claimed_by(path: str | Path) -> tuple[Path, str] | None:
    """The claimed folder that `path` lies in (as given, or with its links resolved) and its holder ('process N',
    ' on <host>' for another host) while the claim is held, else None. Read from the lock file alone, never
    locked: a probe must not make the holder's own claim fail. A claim of a process gone from this host (killed)
    is not taken for a held one; one of another host, whose processes cannot be looked at, is."""
    if os.name != "posix":  # claims are POSIX locks (and os.kill would end the process elsewhere)
        return None
    path = Path(path).absolute()
    for folder in dict.fromkeys([*path.parents, *path.resolve().parents]):
        try:
            pid, host = (folder.parent / f".{folder.name}.lock").read_text(encoding="utf-8").split()
            alive = host != socket.gethostname() or _running(int(pid))
        except (OSError, UnicodeDecodeError, ValueError):  # no lock file, or not one a claim wrote
            continue
        if alive:
            return folder, _holder(pid, host)
    return None


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:  # another user's
        pass
    return True


def _holder(pid: str, host: str | None) -> str:
    return f"process {pid}" + (f" on {host}" if host and host != socket.gethostname() else "")


def cannot_write(path: str | Path, err: OSError) -> str:
    """'cannot write <path>: <reason>' for an OSError of writing `path` through `atomic_output`, naming the file
    the error concerns when that is another one (a file where a folder must be made), never the temporary."""
    path = Path(path)
    concerns = Path(err.filename) if err.filename else path
    other = "" if concerns == path or _is_temporary(concerns, path) else f" ({concerns})"
    return f"cannot write {path}: {err.strerror or err}{other}"


def os_problem(err: OSError) -> str:
    """'<file>: <reason>' for an OSError that names its file, else its text."""
    return f"{err.filename}: {err.strerror}" if err.filename and err.strerror else str(err)


def _is_temporary(name: Path, path: Path) -> bool:
    """Whether `name` is (or would have been) a temporary file of `atomic_output(path)`."""
    return name.parent == path.parent and name.name.startswith(f".{path.stem}.")


def output_problem(output: Path, source: Path) -> str | None:
    """Why a script must not write `output`, made from the file `source`: it is that file, or a folder; None
    when it may."""
    if output.is_dir():
        return f"{output} is a folder; give the file to write"
    if output.resolve() == source.resolve():
        return f"refusing to overwrite the input {source}; write to another file"
    return None


def remove_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporaries `atomic_output` left in `folder` when its process was killed mid-write (a crash
    skips its clean-up); only for folders that no other process is writing to. Returns what was deleted."""
    leftovers = [p for p in Path(folder).glob(".*.tmp*") if p.is_file()]
    for path in leftovers:
        path.unlink(missing_ok=True)
    return leftovers


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable (POSIX); Windows cannot open a directory, and needs no such step."""
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes | memoryview) -> None:
    with atomic_output(path) as tmp, _naming(Path(path)), open(tmp, "wb") as fh:
        fh.write(data)


def atomic_save(obj: Any, path: str | Path) -> None:
    """torch.save, atomically. A write that fails (a full disk) raises the OSError that says why, naming `path`:
    torch.save writes through a Python file here that keeps the error, which torch reports as a RuntimeError
    about stream positions."""
    with atomic_output(path) as tmp, _naming(Path(path)), open(tmp, "wb") as fh:
        writes = _KeptErrors(fh)
        try:
            torch.save(obj, writes)
        except RuntimeError as err:
            if writes.error is not None:
                raise writes.error from err
            raise OSError(errno.EIO, f"torch.save failed ({error_summary(err)})") from err


class _KeptErrors:
    """A file whose last write error is kept."""

    def __init__(self, fh: BinaryIO) -> None:
        self.fh = fh
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        try:
            return self.fh.write(data)
        except OSError as err:
            self.error = err
            raise

    def flush(self) -> None:
        self.fh.flush()


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def blocked_global(err: Exception) -> str | None:
    """The global (module.name) a pickle asked for that torch's safe unpickler refused, if that is the error."""
    needed = re.search(r"GLOBAL (\S+)", str(err))
    return needed.group(1) if needed else None


def error_summary(err: Exception) -> str:
    """A loading error's type and first line (at most 200 characters) for a message, or, for a pickle that asks
    for a global torch's safe unpickler refuses, that global; never torch's advice to retry with
    weights_only=False (which would unpickle whatever the file holds)."""
    needed = blocked_global(err)
    if needed:
        return f"{type(err).__name__}: it asks for {needed}, which could run arbitrary code"
    text = str(err).splitlines()[0] if str(err) else ""
    if len(text) > 200:  # whole sentences where they make up most of it
        end = text.rfind(". ", 80, 200)
        text = text[: end + 1] if end > 0 else text[:200] + "..."
    return f"{type(err).__name__}: {text}" if text and "weights_only" not in text else type(err).__name__


def torch_hub_cache_file(url: str) -> Path:
    """Where torch.hub keeps (or would download) the weights file of `url`: <hub dir>/checkpoints/<file name>."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
