"""lib/times.py: the one parser of instants given to us (messages' publishTime, `--sim-time`, rendered results)."""
import ast
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from lib.times import iso, parse_instant


@pytest.mark.parametrize('text, expected', [
    ('2026-03-02T14:30:00Z', datetime(2026, 3, 2, 14, 30, tzinfo=timezone.utc)),
    ('2026-03-02T09:30:00-05:00', datetime(2026, 3, 2, 14, 30, tzinfo=timezone.utc)),
    ('2026-03-02T14:30:00.123456Z', datetime(2026, 3, 2, 14, 30, 0, 123456, tzinfo=timezone.utc)),
    ('2026-03-02T14:30:00', datetime(2026, 3, 2, 14, 30, tzinfo=timezone.utc)),   # no zone: UTC
])
def test_parse_instant_reads_iso_8601_with_a_zone_or_as_utc(text, expected):
    parsed = parse_instant(text)
    assert parsed == expected and parsed.utcoffset() is not None


def test_parse_instant_keeps_the_offset_it_was_given():
    assert parse_instant('2026-03-02T09:30:00-05:00').utcoffset() == timedelta(hours=-5)


@pytest.mark.parametrize('text', ['', 'yesterday', '2026-13-01T00:00:00Z', '2026-03-02 14:30 UTC'])
def test_parse_instant_refuses_what_is_not_an_instant(text):
    with pytest.raises(ValueError):
        parse_instant(text)


def test_iso_and_parse_instant_round_trip():
    moment = datetime(2026, 3, 2, 14, 30, 5, 250000, tzinfo=timezone.utc)
    assert parse_instant(iso(moment)) == moment


def test_functions_parse_instants_only_through_parse_instant():
    """The request contract, the CLI and the renderer read times with lib.times.parse_instant, not each their own."""
    functions = Path(__file__).resolve().parents[1] / 'functions'
    own_parsers = sorted(str(path.name) for path in functions.rglob('*.py')
                         for node in ast.walk(ast.parse(path.read_text(), str(path)))
                         if isinstance(node, ast.Attribute) and node.attr in ('fromisoformat', 'strptime'))
    assert own_parsers == []
