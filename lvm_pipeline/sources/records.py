"""What a source yields (`Article` or `Rejected`), the whole-file errors, and the one record validator.

JSONL and Parquet records both go through `to_article`, which also turns a `text` carrying HTML
into plain text (`clean_html`); the MediaWiki reader uses it too, after turning wikitext into
plain text. A rejection's reason is "<kind>: <detail>" and its excerpt is short, storable text.
A record nested deeper than MAX_NESTING is rejected before anything recurses into it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

from lvm_pipeline.errors import PipelineError
from lvm_pipeline.markup import clean_html, html_nesting_depth
from lvm_pipeline.text import UNSTORABLE, excerpt

DEFAULT_MAX_ARTICLE_CHARS = 1_000_000
# Levels of arrays and objects a record may nest, the record itself included; deeper ones are rejected.
MAX_NESTING = 100
NESTED_TOO_DEEPLY = f"nested too deeply: more than {MAX_NESTING} levels of arrays and objects"
_JSON_SCALARS = (str, int, bool, type(None))


@dataclass(frozen=True, slots=True)
class Article:
    """One valid article; `locator` says where in the landing file it came from."""

    article_id: str  # stripped, non-empty
    title: str  # stripped, non-empty
    text: str  # non-empty after strip; as given, or its plain text if it carried HTML (char offsets index into it)
    url: str | None = None
    metadata: dict = field(default_factory=dict)  # extra JSON-serialisable fields
    locator: str = ""  # "line 12", "row 40", "page 7 'Title'"
    html_cleaned: bool = False  # the text carried HTML and was turned into plain text


@dataclass(frozen=True, slots=True)
class Rejected:
    """One record that cannot become an article."""

    locator: str
    reason: str  # "<kind>: <detail>"
    excerpt: str  # a short, storable excerpt of the raw input (lvm_pipeline.text.excerpt)
    article_id: str | None = None


class SourceError(PipelineError, ValueError):
    """The whole file cannot be read as a batch."""


class UnsupportedSourceError(SourceError):
    """The file's type (suffix) is not one we read."""


class EmptySourceError(SourceError):
    """The file is empty or holds only whitespace."""


def record_excerpt(record: object) -> str:
    """`excerpt` of a parsed record, re-serialised as JSON (levels past MAX_NESTING shown as "…")."""
    return excerpt(json.dumps(_json_safe(record), ensure_ascii=False))


def nesting_depth(value: object, limit: int = MAX_NESTING) -> int:
    """Levels of lists, tuples and dicts in `value` (0 for a scalar), counted up to `limit` + 1; not recursive."""
    deepest, pending = 0, [(value, 1)]
    while pending:
        item, depth = pending.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, (list, tuple)) else None
        if children is None:
            continue
        if depth > limit:
            return depth
        deepest = max(deepest, depth)
        pending.extend((child, depth + 1) for child in children)
    return deepest


def utf8_error_detail(error: UnicodeDecodeError, where: str) -> str:
    """E.g. "byte 0xff at position 12 of the line"."""
    return f"byte 0x{error.object[error.start]:02x} at position {error.start} of {where}"


def corrupt_file(after: str, error: BaseException) -> Rejected:
    """The single rejection a reader yields when the file breaks off mid-way ("after row 40")."""
    return Rejected(locator=f"after {after}", excerpt="",
                    reason=f"truncated or corrupt file: {type(error).__name__}: {error}")


def to_article(record: object, locator: str, max_article_chars: int = DEFAULT_MAX_ARTICLE_CHARS, *,
               raw: str | bytes | None = None, html: bool = False) -> Article | Rejected:
    """Validate one record (`id`, `title`, `text`, optional `url`; any other non-None key -> metadata).

    `raw` is the record as it appeared in the file, for a rejection's excerpt (default: the record as JSON).
    With `html`, a text carrying HTML is replaced by its plain text (a text with nothing left is rejected).
    """
    def reject(reason: str, article_id: str | None = None) -> Rejected:
        shown = excerpt(raw) if raw is not None else record_excerpt(record)
        return Rejected(locator=locator, reason=reason, excerpt=shown, article_id=article_id)

    if not isinstance(record, dict):
        return reject(f"not an object: expected a JSON object, got {_type_name(record)}")
    article_id = _article_id(record.get("id"))
    if article_id is None:
        return reject(f"missing id: the 'id' field is {_blank_or_type(record.get('id'))}")
    if (problem := _field_problem(record, max_article_chars)) is not None:
        return reject(problem, article_id)
    text, cleaned = record["text"], None
    if html and "<" in text and html_nesting_depth(text) > MAX_NESTING:  # before the parser, which is quadratic in it
        return reject(f"invalid text: HTML elements nested more than {MAX_NESTING} deep", article_id)
    if html and (cleaned := clean_html(text)) is not None:
        if not cleaned.strip():
            return reject("empty text: nothing but markup in the 'text' field", article_id)
        text = cleaned
    url = record.get("url")
    metadata = {key: _json_safe(value) for key, value in record.items()
                if key not in ("id", "title", "text", "url") and value is not None}
    return Article(article_id=article_id, title=record["title"].strip(), text=text,
                   url=(url.strip() or None) if isinstance(url, str) else None,
                   metadata=metadata, locator=locator, html_cleaned=cleaned is not None)


def _field_problem(record: dict, max_article_chars: int) -> str | None:
    """Why the title, text or any string in the record makes it unusable, or None."""
    title, text = record.get("title"), record.get("text")
    if not isinstance(title, str) or not title.strip():
        return f"missing title: the 'title' field is {_blank_or_type(title)}"
    if text is None:
        return "missing text: the record has no 'text' field"
    if not isinstance(text, str):
        return f"invalid text: the 'text' field is {_type_name(text)}, not a string"
    if not text.strip():
        return "empty text: the 'text' field is blank"
    if len(text) > max_article_chars:
        return f"article too long: {len(text):,} characters, over the {max_article_chars:,} limit"
    if nesting_depth(record) > MAX_NESTING:
        return NESTED_TOO_DEEPLY
    if (where := _unstorable(record)) is not None:
        return f"invalid text: {where} (PostgreSQL text cannot store it)"
    return None


def _article_id(value: object) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def _type_name(value: object) -> str:
    """The JSON name of a value's type, for messages."""
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "a number",
             float: "a number", type(None): "null"}
    return names.get(type(value), f"a {type(value).__name__}")


def _blank_or_type(value: object) -> str:
    return "missing or blank" if value is None or isinstance(value, str) else _type_name(value)


def _unstorable(record: dict) -> str | None:
    """Where the first string (or key) PostgreSQL cannot store is, and what it holds; None if there is none.

    Walks the record depth-first in order, with a stack of its own rather than recursion.
    """
    pending: list[tuple[str, object]] = [("the record", record)]
    while pending:
        where, value = pending.pop()
        if isinstance(value, str):
            if (bad := UNSTORABLE.search(value)) is not None:
                what = "a NUL character" if bad.group() == "\x00" else f"an unpaired surrogate U+{ord(bad.group()):04X}"
                return f"{where} contains {what} at position {bad.start()}"
            continue
        if isinstance(value, dict):
            items = [(f"a key of {where}", key) for key in value]
            items += [(f"the {key!r} field" if where == "the record" else f"{where}[{key!r}]", item)
                      for key, item in value.items()]
        elif isinstance(value, (list, tuple)):
            items = [(f"{where}[{index}]", item) for index, item in enumerate(value)]
        else:
            continue
        pending.extend(reversed(items))
    return None


def _json_safe(value: object, levels: int = MAX_NESTING) -> object:
    """`value` as strict JSON: what JSON cannot hold (dates, decimals, bytes from Parquet, NaN and infinities)
    turned into str, and the arrays and objects past `levels` levels into "…"."""
    if isinstance(value, _JSON_SCALARS) or (isinstance(value, float) and math.isfinite(value)):
        return value
    if isinstance(value, (dict, list, tuple)) and levels <= 0:
        return "…"
    if isinstance(value, dict):
        return {str(key): _json_safe(item, levels - 1) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item, levels - 1) for item in value]
    return str(value)
