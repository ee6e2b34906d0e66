"""Opening a landing file by its compression suffix (`.gz`, `.bz2`): decompressed as it is read, never whole."""

from __future__ import annotations

import bz2
import gzip
import os
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, NamedTuple

from lvm_pipeline.sources.records import SourceError

# What reading a damaged compressed stream raises (gzip.BadGzipFile is an OSError; plain reads raise OSError too).
DECOMPRESSION_ERRORS = (EOFError, OSError, zlib.error)


class _Codec(NamedTuple):
    name: str
    signature: bytes  # the first bytes of every such file
    reader: Callable[[BinaryIO], BinaryIO]


_CODECS = {
    ".gz": _Codec("gzip", b"\x1f\x8b", lambda raw: gzip.GzipFile(fileobj=raw, mode="rb")),
    ".bz2": _Codec("bzip2", b"BZh", bz2.BZ2File),
}


@contextmanager
def open_decompressed(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """The file's bytes, decompressed as they are read when its name ends in `.gz` or `.bz2`.

    SourceError, before anything is yielded, when the file does not start with its compression's signature.
    """
    suffix = Path(path).suffix.lower()
    codec = _CODECS.get(suffix)
    with open(path, "rb") as raw:
        if codec is None:
            yield raw
            return
        if raw.read(len(codec.signature)) != codec.signature:
            raise SourceError(f"{path}: not a {codec.name} file: it does not start with the {codec.name} "
                              f"signature its {suffix} suffix promises")
        raw.seek(0)
        with codec.reader(raw) as decompressed:
            yield decompressed
