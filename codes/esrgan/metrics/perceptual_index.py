"""The PIRM challenge's perceptual index, PI = ((10 - Ma) + NIQE) / 2 (lower is better), by which ESRGAN is judged.

Ma et al.'s score (a learned no-reference model, 0..10, higher is better) runs in MATLAB with its own trained
regression forests; it is not reimplemented here. Its per-image values, computed elsewhere, are read from a CSV
file, and PI is formed only where such a value exists.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from ..utils.image import IMAGE_EXTENSIONS


def perceptual_index(ma: float, niqe: float) -> float:
    """``((10 - Ma) + NIQE) / 2``."""
    return ((10.0 - ma) + niqe) / 2.0


def read_ma_scores(path: str | Path) -> dict[str, float]:
    """Ma scores by image name (file name without extension) from a CSV file with the columns `name` and `ma`
    (any case, other columns ignored), e.g. exported from the PIRM evaluation's results table."""
    path = Path(path)
    try:
        return _read_ma_scores(path)
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start}); save the Ma-score file as "
                         "UTF-8 CSV") from None


def _read_ma_scores(path: Path) -> dict[str, float]:
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        columns = {c.strip().lower(): c for c in reader.fieldnames or []}
        if "name" not in columns or "ma" not in columns:
            raise ValueError(f"{path}: a Ma-score file needs the columns name and ma, found "
                             f"{', '.join(reader.fieldnames or []) or 'none'}")
        scores: dict[str, float] = {}
        for line, row in enumerate(reader, start=2):
            name = row[columns["name"]].strip()
            if Path(name).suffix.lower() in IMAGE_EXTENSIONS:  # 'img.001' keeps its dot; 'img.png' is 'img'
                name = Path(name).stem
            try:
                value = float(row[columns["ma"]])
            except (TypeError, ValueError):
                raise ValueError(f"{path}, line {line}: Ma score {row[columns['ma']]!r} of {name!r} is not a "
                                 "number") from None
            if not math.isfinite(value):
                raise ValueError(f"{path}, line {line}: Ma score of {name!r} is {value}")
            if name in scores:
                raise ValueError(f"{path}, line {line}: {name!r} appears twice")
            scores[name] = value
    return scores
