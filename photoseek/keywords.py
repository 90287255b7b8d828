"""The words a photo can be found by, and the words of a query that can find it. Pure functions.

A photo's keyword document has one field per source (:data:`FIELDS`); each back end indexes it
for full-text search with the same rules (lower case, accents folded, English stemming, so
"receipts" finds "receipt"). A query's keywords are its words minus the little ones every
description has ("a", "of", "photo"), so "a photo of Lisbon" looks for "lisbon" only.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

# Document fields, in the order the back ends index them, and how a match in each is reported
# ("why it matched"). Searches by meaning report "semantic".
FIELDS = ("name", "folders", "caption", "keywords", "ocr")
REASONS = {"name": "file_name", "folders": "folder", "caption": "caption", "keywords": "keyword", "ocr": "ocr_text"}
SEMANTIC = "semantic"  # and "tag": an automatic tag the query's words name (photoseek.tags)
# How much a match in each field counts relative to the others (bm25 / ts_rank weights): words
# someone chose (a caption, keywords, a file name) over words read off pixels or inherited from folders.
FIELD_WEIGHTS = {"name": 3.0, "folders": 1.5, "caption": 3.0, "keywords": 3.0, "ocr": 1.0}

@dataclass(frozen=True)
class KeywordHit:
    """A photo found by its words: its id and which of :data:`FIELDS` hold a query word."""

    id: int
    fields: tuple[str, ...]


MAX_QUERY_WORDS = 12
FIELD_LIMITS = {"name": 1000, "folders": 4000, "caption": 4000, "keywords": 4000, "ocr": 8000}

_WORD = re.compile(r"[^\W_]+")
_SEPARATORS = re.compile(r"[_\-.+~]+")
# Words that say nothing about which photo is meant; in a keyword search they would match nearly
# every caption or OCR text.
STOPWORDS = frozenset("""
a an the and or but of on in at to for with without by from into onto over under near next
is are was were be been being this that these those it its as than then there here
my our your their his her its me we you they i he she some any all no not very
photo photos picture pictures image images pic pics shot shots taken showing show shows
""".split())


def query_words(text: str) -> list[str]:
    """The words of a query worth matching against photos' text: lower case, no stopwords, no
    one-letter words (but digits: "2023" counts), each once, at most MAX_QUERY_WORDS."""
    out: list[str] = []
    for word in _WORD.findall(text.lower()):
        if word in STOPWORDS or (len(word) < 2 and not word.isdigit()) or word in out:
            continue
        out.append(word)
        if len(out) == MAX_QUERY_WORDS:
            break
    return out


def document(path: str, root: str | None, *, caption: str | None = None, keywords: tuple[str, ...] | list[str] = (),
             ocr: str | None = None) -> dict[str, str | None]:
    """A photo's keyword document. ``name``: the file name without its extension, separators as
    spaces ("IMG_2023-invoice.jpg" -> "IMG 2023 invoice"); ``folders``: the names of the folders from
    the indexed folder down to the photo's own ("Trips/2019-05 Lisbon"), the indexed folder's own
    name included (someone indexing ".../Lisbon 2019" expects "Lisbon" to find it)."""
    stem = os.path.splitext(os.path.basename(path))[0]
    folder = os.path.dirname(path)
    if root is not None:
        base = os.path.dirname(root.rstrip(os.sep)) or os.sep
        rel = os.path.relpath(folder, base) if folder.startswith(base) else folder
    else:
        rel = folder
    parts = [p for p in rel.split(os.sep) if p not in ("", ".", "..")]
    values = dict(name=_SEPARATORS.sub(" ", stem), folders=" / ".join(_SEPARATORS.sub(" ", p) for p in parts),
                  caption=caption or "", keywords=", ".join(k for k in keywords if k), ocr=ocr)
    # ocr stays None when no OCR read the photo ("" is: read, no text), so `index --ocr` knows what to read.
    return {field: None if values[field] is None else _clean(values[field], FIELD_LIMITS[field]) for field in FIELDS}


def _clean(text: str, limit: int) -> str:
    # Undecodable file-name bytes become U+FFFD (text columns must be valid UTF-8), NULs go.
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace").replace("\x00", " ")
    return " ".join(text.split())[:limit]
