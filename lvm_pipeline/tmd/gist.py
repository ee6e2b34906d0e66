"""An article's gist: the one short text that says what it is about, for choosing its domain.

"<title>: <short description>" (Wikipedia's short descriptions: "Impressionism: Art movement",
"Kannada: Dravidian language"), or, for an article without one (a user's JSONL batch may carry
only id, title and text), "<title>: <first sentence>", which in an encyclopedia lead usually
defines the subject ("X is a Y ..."). The mean of an article's concept vectors blurs what the
article is into everything it mentions; the gist does not.
"""

from __future__ import annotations

from lvm_pipeline.segmentation import split_sentences

LEAD_CHARS = 1_000  # the first sentence is looked for in this much of the text


def first_sentence(text: str) -> str:
    """The first sentence of `text` (its first LEAD_CHARS characters if that sentence runs longer); "" if none."""
    head = text[:LEAD_CHARS]
    spans = split_sentences(head)
    return head[spans[0][0]:spans[0][1]] if spans else ""


def article_gist(title: str, description: str | None, text: str) -> str:
    """"<title>: <description>", else "<title>: <first sentence of text>", else the title alone."""
    title = title.strip()
    what = (description or "").strip() or first_sentence(text)
    return f"{title}: {what}" if what else title
