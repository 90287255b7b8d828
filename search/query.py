"""What is asked: one search request model, and the query syntax people type.

Every way of searching (words, an uploaded photo, "more like this" photo, arithmetic on
them, filters, sort by date) is one :class:`SearchRequest`, answered by one
``Searcher.search``. The command line, the JSON API and the page only translate their input
into it; nothing else builds queries. Pure Python: parsing and validation are unit-tested
without an index or a model.

Query syntax (the search box, ``photoseek search TEXT``, ``?q=``):

* ``dog - leash + snow``: terms joined by a ``+`` or ``-`` that stands alone (spaces around
  it), so ``t-shirt`` or ``c++`` stay one term; a leading ``-`` subtracts the first term.
* ``2:sunset + beach``, ``0.5:people``: a number and a colon before a term weigh it (default 1).
* The query vector is the normalised weighted sum of the terms' unit embeddings.
* ``tag:beach`` (``tag:musical-instrument``: hyphens for spaces) anywhere in the words keeps only
  photos carrying that automatic tag (photoseek.tags), like a filter; a query of tags alone lists
  those photos, best tag score first. :class:`SearchRequest` moves them from its text terms to
  ``filters.tags`` itself, so every caller gets the same syntax.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from datetime import date
from typing import Literal

from photoseek.errors import BadInput

SORTS = ("relevance", "newest", "oldest")
ORIENTATIONS = ("landscape", "portrait", "square")
MAX_TERMS = 16
MAX_WEIGHT = 100.0
Sort = Literal["relevance", "newest", "oldest"]
Orientation = Literal["landscape", "portrait", "square"]

_OPERATOR = re.compile(r"(?:^|\s)([+-])(?=\s|$)")
_TAG = re.compile(r"(?:^|(?<=\s))tag:(\S+)", re.I)
_WEIGHT = re.compile(r"^([+-]?(?:\d+(?:\.\d*)?|\.\d+)):(?!\d)(.*)$", re.S)  # not "12:30 lunch"


@dataclass(frozen=True)
class Term:
    """One weighted part of a query: words, an uploaded image, or an indexed photo (by id)."""

    weight: float = 1.0
    text: str | None = None
    image: bytes | None = field(default=None, repr=False)
    photo_id: int | None = None

    @property
    def kind(self) -> Literal["text", "image", "photo"]:
        return "text" if self.text is not None else "image" if self.image is not None else "photo"

    def describe(self) -> str:
        what = f'"{self.text}"' if self.text is not None else "an image" if self.image is not None else f"photo {self.photo_id}"
        return what if self.weight == 1 else f"{self.weight:g} x {what}"


@dataclass(frozen=True)
class Filters:
    """Which photos may be found. ``after``/``before`` bound the taken date (EXIF, else the file's
    modification time), both inclusive; ``folder`` is a path prefix, recursive; ``camera``
    matches make or model, case-insensitive, as a substring; ``types`` are file types
    (``jpeg``, ``png``, ...)."""

    after: date | None = None
    before: date | None = None
    camera: str | None = None
    folder: str | None = None
    types: tuple[str, ...] = ()
    orientation: Orientation | None = None
    min_pixels: int | None = None
    tags: tuple[str, ...] = ()  # photoseek.tags names; a photo must carry every one (directly or via a descendant)

    def __post_init__(self) -> None:
        if self.after and self.before and self.after > self.before:
            raise BadInput(f"after ({self.after}) is later than before ({self.before}): swap them")
        if self.orientation is not None and self.orientation not in ORIENTATIONS:
            raise BadInput(f"orientation must be one of {', '.join(ORIENTATIONS)}, not {self.orientation!r}")
        if self.min_pixels is not None and self.min_pixels < 1:
            raise BadInput(f"min_pixels must be a positive number of pixels, not {self.min_pixels}")

    @property
    def active(self) -> bool:
        return any((self.after, self.before, self.camera, self.folder, self.types, self.orientation, self.min_pixels,
                    self.tags))


@dataclass(frozen=True)
class SearchRequest:
    terms: tuple[Term, ...]
    filters: Filters = Filters()
    sort: Sort = "relevance"
    min_score: float | None = None  # None: no cutoff by relevance; by date, the calibrated one
    limit: int = 24
    offset: int = 0
    # Also match photos by the words of their file name, folders, caption, keywords and text read in them.
    keywords: bool = True

    def __post_init__(self) -> None:
        terms, filters = split_tags(self.terms, self.filters)
        object.__setattr__(self, "terms", terms)  # frozen: normalised once, here
        object.__setattr__(self, "filters", filters)
        if not self.terms and not self.filters.tags:
            raise BadInput("the query is empty: give some words, a photo, or a photo id to search by")
        if len(self.terms) > MAX_TERMS:
            raise BadInput(f"too many terms ({len(self.terms)}; at most {MAX_TERMS})")
        if self.terms and not any(t.weight > 0 for t in self.terms):
            raise BadInput("a query needs at least one term with a positive weight (what to look for), "
                           "not only terms to subtract")
        if self.sort not in SORTS:
            raise BadInput(f"sort must be one of {', '.join(SORTS)}, not {self.sort!r}")
        if self.limit < 1 or self.offset < 0:
            raise BadInput("limit must be at least 1 and offset at least 0")
        if self.min_score is not None and not -1.0 <= self.min_score <= 1.0:
            raise BadInput(f"min_score is a cosine similarity, between -1 and 1, not {self.min_score}")

    @property
    def similar_to(self) -> int | None:
        """The photo a "more like this" search is about (left out of its own results)."""
        photos = [t.photo_id for t in self.terms if t.photo_id is not None and t.weight > 0]
        return photos[0] if len(photos) == 1 else None

    @property
    def texts(self) -> list[str]:
        """The words of its text terms, added or subtracted (what a language hint reads)."""
        return [t.text for t in self.terms if t.kind == "text"]

    def page(self, limit: int, offset: int) -> SearchRequest:
        return replace(self, limit=limit, offset=offset)


def split_tags(terms: tuple[Term, ...] | list[Term], filters: Filters) -> tuple[tuple[Term, ...], Filters]:
    """``tag:NAME`` words taken out of text terms into ``filters.tags`` (a term left with no words is
    dropped). A tag cannot be subtracted or weighed: :class:`BadInput` says so."""
    kept, tags = [], list(filters.tags)
    for term in terms:
        found = _TAG.findall(term.text) if term.text is not None else []
        if not found:
            kept.append(term)
            continue
        if term.weight != 1:
            raise BadInput(f"tag:{found[0]} cannot be weighed or subtracted: a tag only keeps the photos carrying it; "
                           "write it as a plain word to steer the ranking instead")
        tags += [t.strip('"').lower() for t in found if t.strip('"')]
        rest = " ".join(_TAG.sub(" ", term.text).split())
        if rest:
            kept.append(replace(term, text=rest))
    if len(tags) == len(filters.tags):
        return tuple(terms), filters
    return tuple(kept), replace(filters, tags=tuple(dict.fromkeys(tags)))


def parse_query(text: str, *, max_chars: int = 500) -> list[Term]:
    """Text terms with their weights from what people type. Raises :class:`BadInput`."""
    text = " ".join(text.split())
    if not text:
        raise BadInput("the query is empty: say what to look for, e.g. a dog on a beach")
    if len(text) > max_chars:
        raise BadInput(f"the query is too long ({len(text)} characters; the limit is {max_chars})")
    terms: list[Term] = []
    sign, start = 1.0, 0
    for match in _OPERATOR.finditer(text):
        part = text[start:match.start()].strip()
        if part:
            terms.append(_term(part, sign))
        elif terms:  # "a + - b": two operators with nothing between them
            raise BadInput(f"nothing between two operators in {text!r}: write 'a - b' or 'a + b'")
        sign = -1.0 if match.group(1) == "-" else 1.0
        start = match.end()
    tail = text[start:].strip()
    if not tail:
        raise BadInput(f"the query ends with an operator: {text!r}; say what to add or subtract after it")
    terms.append(_term(tail, sign))
    return terms


def format_query(terms: tuple[Term, ...] | list[Term]) -> str | None:
    """The text terms written back in the query syntax (``dog - leash``, ``2:sunset + beach``), or
    None when there are none. ``parse_query(format_query(t))`` gives the text terms of ``t`` back."""
    out = ""
    for term in (t for t in terms if t.text is not None):
        magnitude = abs(term.weight)
        text = term.text if magnitude == 1 else f"{magnitude:g}:{term.text}"
        sign = "-" if term.weight < 0 else "+"
        out = (f"{out} {sign} {text}" if out else (f"- {text}" if sign == "-" else text))
    return out or None


def _term(part: str, sign: float) -> Term:
    weight = 1.0
    m = _WEIGHT.match(part)
    if m:
        weight, part = parse_weight(m.group(1)), m.group(2).strip()
        if not part:
            raise BadInput(f"weight {m.group(1)} has no words after its colon")
    return Term(weight=sign * weight, text=part)


def parse_weight(value: str | float) -> float:
    try:
        weight = float(value)
    except (TypeError, ValueError):
        raise BadInput(f"a weight must be a number, not {value!r}") from None
    if not math.isfinite(weight) or abs(weight) > MAX_WEIGHT:
        raise BadInput(f"a weight must be a number between -{MAX_WEIGHT:g} and {MAX_WEIGHT:g}, not {value!r}")
    if weight == 0:
        raise BadInput("a weight of 0 does nothing: leave the term out instead")
    return weight


def parse_date(value: str | None, name: str) -> date | None:
    """An ISO date (``2021-06-01``) from a parameter called ``name``."""
    if value is None or value == "":
        return None
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        raise BadInput(f"{name} must be a date as YYYY-MM-DD, not {value!r}") from None
