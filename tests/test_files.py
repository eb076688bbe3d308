"""Atomic writes (utils/files.py): a failed write leaves the previous file whole, a finished one is on disk."""

import errno
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from esrgan.archs.layouts import save_generator_state
from esrgan.archs.rrdbnet import RRDBNet
from esrgan.utils import files
from esrgan.utils.files import atomic_output, atomic_save, atomic_write_text


def test_a_write_that_fails_leaves_the_previous_file_and_no_temporary(tmp_path):
    target = tmp_path / "latest.state"
    atomic_save({"iter": torch.tensor(1)}, target)
    with pytest.raises(RuntimeError, match="disk full"), atomic_output(target) as tmp:
        tmp.write_bytes(b"half a checkpo")
        raise RuntimeError("disk full")
    assert int(torch.load(target, weights_only=True)["iter"]) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.state"]


def test_the_temporary_keeps_the_extension_and_the_result_the_usual_permissions(tmp_path):
    with atomic_output(tmp_path / "sub" / "g.safetensors") as tmp:
        assert tmp.parent == tmp_path / "sub" and tmp.name.startswith(".g.") and tmp.suffix == ".safetensors"
        tmp.write_bytes(b"x")
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE((tmp_path / "sub" / "g.safetensors").stat().st_mode) == 0o666 & ~mask


def test_a_writer_that_replaces_the_temporary_itself_still_gives_the_usual_permissions(tmp_path):
    """safetensors writes its own temporary and renames it over the path it is given (owner-only)."""
    with atomic_output(tmp_path / "g.safetensors") as tmp:
        own = tmp.with_name("own.tmp")
        own.write_bytes(b"x")
        own.chmod(0o600)
        os.replace(own, tmp)
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE((tmp_path / "g.safetensors").stat().st_mode) == 0o666 & ~mask


@pytest.mark.skipif(os.name != "posix", reason="directories are fsynced on POSIX only")
def test_the_file_and_then_its_directory_are_flushed_to_disk(tmp_path, monkeypatch):
    synced: list[str] = []
    real_fsync = os.fsync

    def record(fd: int) -> None:
        synced.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real_fsync(fd)

    monkeypatch.setattr(files.os, "fsync", record)
    atomic_write_text(tmp_path / "latest.txt", "1000\n")
    assert synced == ["file", "dir"]
    assert (tmp_path / "latest.txt").read_text(encoding="utf-8") == "1000\n"


@pytest.mark.skipif(os.name != "posix", reason="directories are fsynced on POSIX only")
def test_the_file_is_flushed_before_the_rename_and_the_directory_after_it(tmp_path, monkeypatch):
    """The directory's fsync makes the rename durable: before the rename it would flush the old entry."""
    steps: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def record_fsync(fd: int) -> None:
        steps.append("fsync dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync file")
        real_fsync(fd)

    def record_replace(src, dst) -> None:
        steps.append("rename")
        real_replace(src, dst)

    monkeypatch.setattr(files.os, "fsync", record_fsync)
    monkeypatch.setattr(files.os, "replace", record_replace)
    atomic_write_text(tmp_path / "latest", "2000\n")
    assert steps == ["fsync file", "rename", "fsync dir"]
    assert (tmp_path / "latest").read_text(encoding="utf-8") == "2000\n"


@pytest.mark.parametrize("name, write", [
    ("w.pth", lambda path: atomic_save({"a": torch.ones(1000)}, path)),
    ("latest", lambda path: atomic_write_text(path, "x" * 1000)),
    ("g.safetensors", lambda path: save_generator_state(RRDBNet(3, 3, 4, 1, 2).state_dict(), path)),
])
def test_a_full_disk_is_an_oserror_naming_the_file_and_the_previous_file_stays(tmp_path, full_disk, name, write):
    """torch.save's own writer reports a full disk as a RuntimeError about stream positions and safetensors as a
    SafetensorError; atomic writes write through a Python file (torch.save) or write the bytes themselves."""
    if name.endswith(".safetensors"):
        pytest.importorskip("safetensors")
    target = tmp_path / name
    write(target)
    before = target.read_bytes()
    full_disk()
    with pytest.raises(OSError) as info:
        write(target)
    assert str(info.value) == f"[Errno 28] No space left on device: '{target}'"
    assert files.cannot_write(target, info.value) == f"cannot write {target}: No space left on device"
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]
    assert target.read_bytes() == before


def test_a_temporary_that_cannot_be_made_is_reported_as_the_file(tmp_path, monkeypatch):
    def refused(prefix, suffix, dir):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), f"{dir}/{prefix}abc{suffix}")

    monkeypatch.setattr(files.tempfile, "mkstemp", refused)
    with pytest.raises(PermissionError) as info:
        atomic_write_text(tmp_path / "latest", "1\n")
    assert str(info.value) == f"[Errno 13] Permission denied: '{tmp_path / 'latest'}'"


def test_an_oserror_about_the_temporary_in_the_block_names_the_file_and_one_about_another_file_passes(tmp_path):
    """A writer given the temporary (an exporter writing it itself) fails naming it: the error names the target;
    an error about some other file is the caller's and passes unchanged."""
    target = tmp_path / "g.onnx"
    with pytest.raises(OSError) as info, atomic_output(target) as tmp:
        raise OSError(errno.EFBIG, os.strerror(errno.EFBIG), str(tmp))
    assert info.value.filename == str(target) and info.value.errno == errno.EFBIG
    other = tmp_path / "weights.pth"
    with pytest.raises(OSError) as info, atomic_output(target):
        raise OSError(errno.ENOENT, os.strerror(errno.ENOENT), str(other))
    assert info.value.filename == str(other)
    assert list(tmp_path.iterdir()) == []


def test_a_long_error_is_cut_after_a_whole_sentence_or_marked_as_cut():
    from esrgan.utils.files import error_summary

    sentences = "A first sentence. " + "b" * 150 + ". " + "c" * 100
    assert error_summary(RuntimeError(sentences)) == f"RuntimeError: A first sentence. {'b' * 150}."
    assert error_summary(RuntimeError("x" * 300)) == f"RuntimeError: {'x' * 200}..."
    assert error_summary(RuntimeError("Bad. " + "x" * 300)) == f"RuntimeError: Bad. {'x' * 195}..."  # too short
    assert error_summary(RuntimeError("short. second line\nmore")) == "RuntimeError: short. second line"


def test_cannot_write_names_another_file_the_error_concerns_but_never_the_temporary(tmp_path):
    target = tmp_path / "g.onnx"
    temporary = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / ".g.x1y2.tmp.onnx"))
    assert files.cannot_write(target, temporary) == f"cannot write {target}: No space left on device"
    blocking = OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(tmp_path / "file"))
    assert files.cannot_write(target, blocking) == f"cannot write {target}: Not a directory ({tmp_path / 'file'})"


def test_a_load_error_that_mentions_weights_only_is_summarised_by_its_type_alone():
    """torch's refusals end with advice to retry with weights_only=False, which would unpickle whatever the file
    holds: the summary never repeats it."""
    from esrgan.utils.files import error_summary

    advice = ("Weights only load failed. Re-running `torch.load` with `weights_only` set to `False` will likely "
              "succeed, but it can result in arbitrary code execution.")
    assert error_summary(RuntimeError(advice)) == "RuntimeError"


WRITE_OVER_THE_LIMIT = """
import resource, signal, sys, torch
sys.path.insert(0, {codes!r})
from esrgan.archs.layouts import save_generator_state
from esrgan.archs.rrdbnet import RRDBNet
from esrgan.utils.files import atomic_save
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
try:
    {write}
except OSError as err:
    print(err)
"""


@pytest.mark.skipif(os.name != "posix", reason="a file size limit (RLIMIT_FSIZE) is POSIX")
@pytest.mark.parametrize("name, write", [
    ("w.pth", "atomic_save({{'a': torch.ones(10_000)}}, {path!r})"),
    ("g.safetensors", "save_generator_state(RRDBNet(3, 3, 8, 2, 4).state_dict(), {path!r})"),
])
def test_writers_that_hit_a_real_limit_raise_the_oserror_naming_the_file(tmp_path, name, write):
    """The real writers, not a stand-in: a file size limit fails a write as a full disk does (with EFBIG)."""
    if name.endswith(".safetensors"):
        pytest.importorskip("safetensors")
    target = tmp_path / name
    target.write_bytes(b"the previous file")
    script = WRITE_OVER_THE_LIMIT.format(codes=str(Path(files.__file__).parents[2]),
                                         write=write.format(path=str(target)))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"[Errno 27] File too large: '{target}'\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]
    assert target.read_bytes() == b"the previous file"


HOLD = """
import sys, time
sys.path.insert(0, {codes!r})
from pathlib import Path
from esrgan.utils.files import claimed
with claimed(Path({folder!r}), "train.py"):
    print("held", flush=True)
    time.sleep(60)
"""


@pytest.mark.skipif(os.name != "posix", reason="folders are claimed with POSIX locks")
def test_a_folder_another_process_holds_is_refused_with_its_process_id_until_it_ends(tmp_path):
    folder = tmp_path / "experiments" / "run"
    script = HOLD.format(codes=str(Path(files.__file__).parents[2]), folder=str(folder))
    holder = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(OSError) as info, files.claimed(folder, "train.py"):
            pass
        assert str(info.value) == (f"{folder} is in use by another train.py (process {holder.pid}); wait for it to "
                                   "end or stop it, or give this one another name")
    finally:
        holder.kill()
        holder.wait()
    with files.claimed(folder, "train.py"):  # a killed holder's lock is gone with it
        assert (tmp_path / "experiments" / ".run.lock").read_text() == f"{os.getpid()} {socket.gethostname()}\n"
    assert not (tmp_path / "experiments" / ".run.lock").exists()


@pytest.mark.skipif(os.name != "posix", reason="folders are claimed with POSIX locks")
def test_a_file_in_a_claimed_folder_names_the_folder_and_its_holder_while_the_claim_is_held(tmp_path):
    run = tmp_path / "experiments" / "run"
    weights = run / "models" / "latest_G.pth"
    assert files.claimed_by(weights) is None
    with files.claimed(run, "train.py"):
        assert files.claimed_by(weights) == (run, f"process {os.getpid()}")
        with files.claimed(run.parent, "x"):  # the innermost claimed folder is named
            assert files.claimed_by(weights) == (run, f"process {os.getpid()}")
    assert files.claimed_by(weights) is None
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock = tmp_path / "experiments" / ".run.lock"
    lock.parent.mkdir()  # the claim removed the folder it had made
    lock.write_text(f"{dead.stdout.strip()} {socket.gethostname()}\n")  # what a killed holder leaves
    assert files.claimed_by(weights) is None
    lock.write_text("4242 gpu-node-7\n")  # a holder on another machine cannot be looked at: taken as held
    assert files.claimed_by(weights) == (run, "process 4242 on gpu-node-7")
    alias = tmp_path / "alias"
    alias.symlink_to(run, target_is_directory=True)  # weights named through a link to the run: its claim
    assert files.claimed_by(alias / "models" / "latest_G.pth") == (run, "process 4242 on gpu-node-7")
    for text in ("4242\n", "99999999999999999999 " + socket.gethostname(), "\u00b2 " + socket.gethostname(), ""):
        lock.write_text(text)  # not what a claim writes, or a pid no process has: not a held claim
        assert files.claimed_by(weights) is None, text


@pytest.mark.skipif(os.name != "posix", reason="folders are claimed with POSIX locks")
def test_a_claim_leaves_no_trace_and_removes_the_folders_it_made_for_its_lock(tmp_path):
    (tmp_path / "kept").mkdir()
    with files.claimed(tmp_path / "a" / "b" / "run", "test.py"):
        assert (tmp_path / "a" / "b" / ".run.lock").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept"]
    with files.claimed(tmp_path / "a" / "b" / "run", "test.py"):
        (tmp_path / "a" / "b" / "run").mkdir()  # what the holder wrote stays, and so do the folders above it
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == ["a", "a/b", "a/b/run", "kept"]


@pytest.mark.skipif(os.name != "posix", reason="folders are claimed with POSIX locks")
def test_on_a_file_system_without_locks_a_claim_holds_nothing_and_does_not_stop_the_run(tmp_path, monkeypatch):
    import fcntl

    def no_locks(fd, operation):
        raise OSError(errno.ENOSYS, "Function not implemented")  # Lustre mounted without -o flock

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with files.claimed(tmp_path / "run", "train.py"):
        (tmp_path / "run").mkdir()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


@pytest.mark.skipif(os.name != "posix", reason="folders are claimed with POSIX locks")
def test_a_holder_on_another_host_is_named_with_its_host(tmp_path, monkeypatch):
    """On a shared file system the process id alone would point at a process of this host."""
    with files.claimed(tmp_path / "run", "train.py"):
        (tmp_path / ".run.lock").write_text("4242 gpu-node-07\n")
        with pytest.raises(OSError, match=r"in use by another train\.py \(process 4242 on gpu-node-07\); wait"), \
                files.claimed(tmp_path / "run", "train.py"):
            pass


@pytest.mark.skipif(os.name != "posix", reason="folders are claimed with POSIX locks")
def test_a_lock_file_this_process_cannot_open_leaves_the_run_unguarded_not_stopped(tmp_path, monkeypatch):
    """A stale lock file of another user in a shared root (EACCES), or a read-only root."""
    real_open = open

    def refused(path, *args, **kwargs):
        if str(path).endswith(".lock"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", refused)
    with files.claimed(tmp_path / "run", "train.py"):
        pass
