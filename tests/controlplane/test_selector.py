"""pop_selector parsing and matching (no database involved)."""

from __future__ import annotations

import pytest

from edgefn.controlplane.errors import InvalidSelector
from edgefn.controlplane.selector import matches, parse_selector

TOKYO = {"region": "tokyo", "latency": 20, "pop_id": "jp-t1"}


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("region=='tokyo'", True),
        ('region == "osaka"', False),
        ("region in ['tokyo','osaka']", True),
        ("region not in ['tokyo']", False),
        ("latency<30", True),
        ("latency>=30", False),
        ("latency == 20.0", True),
        ("region=='osaka' or latency<30", True),
        ("region=='tokyo' and not (latency<30)", False),
        ("zone=='a'", False),  # a missing label never matches
        ("region<30", False),  # ordering needs numbers on both sides
        ("pop_id=='jp-t1'", True),
    ],
)
def test_matches(source: str, expected: bool) -> None:
    assert parse_selector(source).matches(TOKYO) is expected


@pytest.mark.parametrize(
    "source",
    [
        "",
        "region=",
        "region = 'tokyo'",
        "__import__('os')",
        "region == tokyo",
        "region in ['a'",
        "a==1 b==2",
        "(a==1",
        "region=='x' and",
        "1==1",
    ],
)
def test_rejects(source: str) -> None:
    with pytest.raises(InvalidSelector):
        parse_selector(source)


def test_no_selector_matches_everything() -> None:
    assert matches(None, {})
