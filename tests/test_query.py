"""The query syntax and the request model: pure logic, no index or model needed."""

from __future__ import annotations

from datetime import date

import pytest

from photoseek.errors import BadInput
from photoseek.search.query import (
    Filters, SearchRequest, Term, format_query, parse_date, parse_query, parse_weight,
)


def terms(text: str) -> list[tuple[float, str]]:
    return [(t.weight, t.text) for t in parse_query(text)]


@pytest.mark.parametrize("text, expected", [
    ("a dog on a beach", [(1.0, "a dog on a beach")]),
    ("dog - leash + snow", [(1.0, "dog"), (-1.0, "leash"), (1.0, "snow")]),
    ("2:sunset + beach", [(2.0, "sunset"), (1.0, "beach")]),
    ("beach - 0.5:people", [(1.0, "beach"), (-0.5, "people")]),
    ("- people + beach", [(-1.0, "people"), (1.0, "beach")]),
    ("a t-shirt + c++ code", [(1.0, "a t-shirt"), (1.0, "c++ code")]),
    ("lunch at 12:30", [(1.0, "lunch at 12:30")]),
    ("  spaced    out  -   words ", [(1.0, "spaced out"), (-1.0, "words")]),
    (".5:fog", [(0.5, "fog")]),
])
def test_terms_and_weights(text, expected):
    assert terms(text) == expected
    assert terms(format_query(parse_query(text))) == expected  # written back, it reads the same


@pytest.mark.parametrize("text, needle", [
    ("", "empty"),
    ("   ", "empty"),
    ("dog -", "ends with an operator"),
    ("dog + - cat", "nothing between two operators"),
    ("2: + cat", "has no words"),
    ("0:cat", "weight of 0"),
    ("1000:cat", "between -100 and 100"),
    ("x" * 501, "too long"),
])
def test_syntax_errors_say_what_is_wrong(text, needle):
    with pytest.raises(BadInput, match=needle):
        parse_query(text)


def test_weights_must_be_finite_numbers():
    assert parse_weight("1.5") == 1.5
    for bad in ("heavy", "nan", "inf", ""):
        with pytest.raises(BadInput, match="weight must be a number"):
            parse_weight(bad)


def test_dates_name_the_parameter():
    assert parse_date("2021-06-01", "after") == date(2021, 6, 1)
    assert parse_date(None, "after") is None
    with pytest.raises(BadInput, match=r"before must be a date as YYYY-MM-DD, not '2021-13-01'"):
        parse_date("2021-13-01", "before")


def test_request_rules():
    dog = Term(text="dog")
    with pytest.raises(BadInput, match="empty"):
        SearchRequest(terms=())
    with pytest.raises(BadInput, match="positive weight"):
        SearchRequest(terms=(Term(weight=-1, text="people"),))
    with pytest.raises(BadInput, match="sort must be one of relevance, newest, oldest"):
        SearchRequest(terms=(dog,), sort="random")
    with pytest.raises(BadInput, match="min_score"):
        SearchRequest(terms=(dog,), min_score=2)
    with pytest.raises(BadInput, match="later than before"):
        Filters(after=date(2022, 1, 1), before=date(2021, 1, 1))
    with pytest.raises(BadInput, match="orientation must be one of"):
        Filters(orientation="diagonal")
    assert not Filters().active and Filters(camera="pixel").active
    assert SearchRequest(terms=(Term(photo_id=7), Term(text="in winter"))).similar_to == 7
    assert SearchRequest(terms=(dog,)).similar_to is None
