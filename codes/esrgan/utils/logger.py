"""Console and file logging that coexists with tqdm progress bars."""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
from pathlib import Path
from typing import Any

from tqdm import tqdm

ROOT_LOGGER = "esrgan"


class _TqdmHandler(logging.StreamHandler):
    """Print through tqdm so that log lines do not tear the progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:
            self.handleError(record)


class _Backlog(logging.Handler):
    """Keeps the records of the set-up until the log file exists (a run's folder is made, and an earlier run in
    it moved aside, only once the set-up has succeeded)."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


RANK_LOCAL = {"rank_local": True}  # `extra=` of a warning about what only this process saw (its own data)


def _own_news(record: logging.LogRecord) -> bool:
    """What a process other than rank 0 reports: its errors and its `RANK_LOCAL` warnings. Its other records
    repeat rank 0's (every process builds the same networks from the same options)."""
    return record.levelno >= logging.ERROR or getattr(record, "rank_local", False)


FORMAT = logging.Formatter("%(asctime)s %(levelname)s: %(message)s", datefmt="%y-%m-%d %H:%M:%S")


def setup_logging(level: int = logging.INFO, backlog: bool = False, own_news_only: bool = False) -> logging.Logger:
    """Configure the package logger: console (through tqdm); a log file is added by `add_log_file`. Idempotent.
    With `backlog` the records are also kept for `add_log_file` to write first; with `own_news_only` (ranks
    other than 0) the console shows only errors and `RANK_LOCAL` warnings."""
    logger = logging.getLogger(ROOT_LOGGER)
    logger.setLevel(level)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    console = _TqdmHandler()
    console.setFormatter(FORMAT)
    if own_news_only:
        console.addFilter(_own_news)
    logger.addHandler(console)
    if backlog:
        logger.addHandler(_Backlog())
    return logger


class _LogFile(logging.FileHandler):
    """A log file that, once it cannot be written (a full disk), says so once on the console and is left
    alone, where logging would print a traceback for every record."""

    failed = False

    def emit(self, record: logging.LogRecord) -> None:
        if not self.failed:
            super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (logging's name)
        self.failed = True
        err = sys.exc_info()[1]
        tqdm.write(f"{FORMAT.formatTime(record, FORMAT.datefmt)} ERROR: cannot write the log file {self.baseFilename} "
                   f"({err}); the console goes on logging", file=sys.stderr)


def add_log_file(log_file: Path, own_news_only: bool = False) -> None:
    """Also log to `log_file`, starting with the records kept since setup_logging(backlog=True). With
    `own_news_only`, only errors and `RANK_LOCAL` warnings go there, and the file is made only when there is
    one."""
    logger = logging.getLogger(ROOT_LOGGER)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    file_handler = _LogFile(log_file, encoding="utf-8", delay=own_news_only)
    file_handler.setFormatter(FORMAT)
    if own_news_only:
        file_handler.addFilter(_own_news)
    for handler in [h for h in logger.handlers if isinstance(h, _Backlog)]:
        logger.removeHandler(handler)
        for record in handler.records:
            file_handler.handle(record)
    logger.addHandler(file_handler)


def log_error_to_file(message: str) -> None:
    """Write an error that ends the program into the log file (if there is one); the console gets it already."""
    logger = logging.getLogger(ROOT_LOGGER)
    record = logger.makeRecord(logger.name, logging.ERROR, __file__, 0, message, None, None)
    for handler in logger.handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


class TensorBoard:
    """TensorBoard's SummaryWriter for the few calls training makes, where a write that fails (a full disk)
    stops TensorBoard logging with one error, and training goes on, rather than the run with a traceback."""

    def __init__(self, log_dir: Path, purge_step: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        _quiet_writer_threads()
        self.log_dir = log_dir
        self.writer: Any = SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self._call("add_scalar", tag, value, step)

    def add_image(self, tag: str, image: Any, step: int, dataformats: str) -> None:
        self._call("add_image", tag, image, step, dataformats=dataformats)

    def close(self) -> None:
        self._call("close")
        self.writer = None

    def _call(self, method: str, *args: Any, **kwargs: Any) -> None:
        if self.writer is None:
            return
        try:
            getattr(self.writer, method)(*args, **kwargs)
        except OSError as err:
            writer, self.writer = self.writer, None
            logging.getLogger(ROOT_LOGGER).error("TensorBoard logging stopped: cannot write %s (%s); training goes "
                                                 "on", self.log_dir, err)
            with contextlib.suppress(OSError):
                writer.close()


def _quiet_writer_threads() -> None:
    """Leave an error of TensorBoard's writer thread to the next call, which raises it (and `TensorBoard` reports
    it once): the thread would print its traceback first. Installed once, over the hook there was."""
    previous = threading.excepthook
    if getattr(previous, "quiets_tensorboard", False):
        return

    def hook(args: threading.ExceptHookArgs) -> None:
        if type(args.thread).__name__ != "_AsyncWriterThread":
            previous(args)

    hook.quiets_tensorboard = True  # type: ignore[attr-defined]
    threading.excepthook = hook
