"""Where images come from: a folder of image files or an LMDB (BasicSR's layout), behind one small interface.

Both index their images once at start-up (dictionaries, O(N)) and report image sizes without decoding pixels:
image headers for folders, `meta_info.txt` for LMDB. That is what lets a dataset check every pair before the
first iteration instead of failing inside a worker hours later.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

from ..utils.image import header_size, images_by_stem, read_image
from .lmdb_io import LmdbImageReader, read_meta_info

Backend = Literal["auto", "folder", "lmdb"]
HEADER_THREADS = 8


class ImageSource(Protocol):
    root: str

    def keys(self) -> list[str]: ...

    def sizes(self) -> dict[str, tuple[int, int] | None]:
        """(height, width) of every image without decoding pixels; None for a file that cannot be read."""
        ...

    def read(self, key: str) -> np.ndarray:
        """float32 RGB HxWx3 in [0, 1]."""
        ...

    def describe(self, key: str) -> str:
        """Where an image lives, for messages."""
        ...


class FolderSource:
    """Image files directly in a folder, keyed by file name without extension."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.paths = images_by_stem(root)

    def keys(self) -> list[str]:
        return list(self.paths)

    def sizes(self) -> dict[str, tuple[int, int] | None]:
        def header(key: str) -> tuple[str, tuple[int, int] | None]:
            try:
                width, height = header_size(self.paths[key])
            except OSError:
                return key, None
            return key, (height, width)

        with ThreadPoolExecutor(HEADER_THREADS) as pool:
            return dict(pool.map(header, self.paths))

    def read(self, key: str) -> np.ndarray:
        return read_image(self.paths[key])

    def describe(self, key: str) -> str:
        return str(self.paths[key])


class LmdbSource:
    """An LMDB of PNG-encoded images with `meta_info.txt` (BasicSR's layout); opened lazily per process."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.meta = read_meta_info(root)
        self.reader = LmdbImageReader(root)

    def keys(self) -> list[str]:
        return list(self.meta)

    def sizes(self) -> dict[str, tuple[int, int] | None]:
        return {k: (h, w) for k, (h, w, _) in self.meta.items()}

    def read(self, key: str) -> np.ndarray:
        try:
            return self.reader.read(key)
        except KeyError as err:  # listed in meta_info.txt but not stored: a broken image like any other
            raise OSError(str(err)) from None

    def describe(self, key: str) -> str:
        return f"{self.root}:{key}"


def open_source(root: str, backend: Backend = "auto") -> ImageSource:
    """A folder or LMDB source; `auto` picks LMDB for paths ending in `.lmdb` and for folders holding data.mdb."""
    is_lmdb = (Path(root) / "data.mdb").is_file()
    if backend == "lmdb" or (backend == "auto" and (root.rstrip("/").endswith(".lmdb") or is_lmdb)):
        if backend == "lmdb" and not is_lmdb:
            raise ValueError(f"{root} is not an LMDB (no data.mdb) but data_type is lmdb: set data_type to auto "
                             "or folder for image folders, or make the LMDB with scripts/create_lmdb.py")
        return LmdbSource(root)
    if is_lmdb:
        raise ValueError(f"{root} is an LMDB (it holds data.mdb) but data_type is folder: set data_type to auto or "
                         "lmdb")
    return FolderSource(root)
