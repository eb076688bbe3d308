"""Logging (utils/logger.py): a log file or TensorBoard folder that cannot be written stops only that logging."""

import logging
import threading

import numpy as np
import pytest

from esrgan.utils.logger import TensorBoard, add_log_file, setup_logging


class _FullStream:
    def write(self, text: str) -> int:
        raise OSError(28, "No space left on device")

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_a_log_file_that_cannot_be_written_says_so_once_and_the_console_goes_on(tmp_path, capsys):
    """logging's own handleError prints a traceback for every record."""
    log = setup_logging()
    try:
        add_log_file(tmp_path / "train.log")
        (handler,) = [h for h in log.handlers if isinstance(h, logging.FileHandler)]
        handler.stream = _FullStream()
        for i in range(3):
            log.info("record %d", i)
        err = capsys.readouterr().err
        assert err.count("cannot write the log file") == 1 and "Traceback" not in err
        assert (f"ERROR: cannot write the log file {tmp_path / 'train.log'} ([Errno 28] No space left on device); "
                "the console goes on logging") in err
        assert [line.split(": ", 1)[1] for line in err.splitlines() if "INFO" in line] == [
            "record 0", "record 1", "record 2"]
    finally:
        setup_logging()


def test_a_tensorboard_folder_that_cannot_be_written_stops_tensorboard_with_one_error(tmp_path, package_log,
                                                                                     monkeypatch):
    tb = TensorBoard(tmp_path / "tb", purge_step=1)
    tb.add_scalar("train/l_g_pix", 0.5, 1)
    writer, calls = tb.writer, []

    def full(*args, **kwargs):
        calls.append(args)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(writer, "add_scalar", full)
    tb.add_scalar("train/l_g_pix", 0.4, 2)
    tb.add_scalar("train/l_g_pix", 0.3, 3)
    tb.add_image("val/x", None, 3, dataformats="HWC")
    tb.close()
    tb.close()
    assert len(calls) == 1
    assert sorted({r.getMessage() for r in package_log.records if r.levelno >= logging.WARNING}) == [
        f"TensorBoard logging stopped: cannot write {tmp_path / 'tb'} ([Errno 28] No space left on device); "
        "training goes on"]
    assert writer.all_writers is None  # the failed writer was closed
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))


def test_a_tensorboard_call_that_is_wrong_is_an_error_not_a_full_disk(tmp_path):
    tb = TensorBoard(tmp_path / "tb", purge_step=1)
    with pytest.raises(Exception, match="size of input tensor and input format are different"):
        tb.add_image("val/x", np.zeros((4, 4, 3)), 1, dataformats="CHWX")
    assert tb.writer is not None
    tb.close()


class _AsyncWriterThread(threading.Thread):  # the name of TensorBoard's writer thread
    def run(self) -> None:
        raise OSError(28, "No space left on device")


def test_the_tensorboard_writer_threads_traceback_is_left_to_the_next_call_and_others_still_reach_the_hook(
        tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(threading, "excepthook", lambda args: seen.append(type(args.exc_value).__name__))
    for _ in range(2):  # installed once
        TensorBoard(tmp_path / "tb", purge_step=1).close()
    for thread in (_AsyncWriterThread(), threading.Thread(target=lambda: 1 / 0)):
        thread.start()
        thread.join()
    assert seen == ["ZeroDivisionError"]


@pytest.mark.parametrize("n_workers", [0, 1])
def test_an_error_in_a_data_loader_worker_is_its_own_message_not_the_workers_traceback(n_workers):
    import torch

    from esrgan.cli import _message

    class Broken(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 1

        def __getitem__(self, i):
            raise OSError("cannot read photo.png: the file is truncated; replace it")

    with pytest.raises(OSError) as info:
        next(iter(torch.utils.data.DataLoader(Broken(), num_workers=n_workers)))
    assert _message(info.value) == "cannot read photo.png: the file is truncated; replace it" + (
        " (in data-loader worker 0)" if n_workers else "")
