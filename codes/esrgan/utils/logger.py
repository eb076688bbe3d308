"""Console and file logging that coexists with tqdm progress bars."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

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


def add_log_file(log_file: Path, own_news_only: bool = False) -> None:
    """Also log to `log_file`, starting with the records kept since setup_logging(backlog=True). With
    `own_news_only`, only errors and `RANK_LOCAL` warnings go there, and the file is made only when there is
    one."""
    logger = logging.getLogger(ROOT_LOGGER)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    file_handler = logging.FileHandler(log_file, encoding="utf-8", delay=own_news_only)
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
