"""The search box's syntax (earshot.query_syntax): pure parsing, no catalogue."""

from __future__ import annotations

import math

import pytest

from earshot.errors import SearchError
from earshot.query_syntax import QuerySyntaxError, Range, fts_phrase, parse_query, split_negation


def test_plain_text_is_all_description():
    q = parse_query("a dog barks in the rain")
    assert q.text == q.positive == "a dog barks in the rain"
    assert q.negative is None and not q.has_filters()


def test_exclusions_phrases_and_fields_are_taken_out_of_the_description():
    q = parse_query('rain on a roof -thunder "field recording" dur:<30 ext:wav sr:>=48000 ch:2')
    assert q.text == "rain on a roof"
    assert q.exclude == ("thunder",)
    assert q.phrases == ("field recording",)
    assert q.formats == ("wav",)
    assert q.duration == Range(None, math.nextafter(30.0, -math.inf))
    assert q.sample_rate == Range(48000.0, None)
    assert q.channels == Range(2.0, 2.0)
    assert q.has_filters()


def test_excluded_phrase_and_quoted_field_values():
    q = parse_query('door -"car door" folder:"my foley" tag:"Domestic animals, pets"')
    assert q.text == "door"
    assert q.exclude == ("car door",)
    assert q.folders == ("my foley",)
    assert q.tags == ("Domestic animals, pets",)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("30", Range(30.0, 30.0)),
        ("=4", Range(4.0, 4.0)),
        ("<=30", Range(None, 30.0)),
        (">2.5", Range(math.nextafter(2.5, math.inf), None)),
        (">=1", Range(1.0, None)),
        ("1..5", Range(1.0, 5.0)),
        ("..5", Range(None, 5.0)),
        ("2..", Range(2.0, None)),
        ("<500ms", Range(None, math.nextafter(0.5, -math.inf))),
        (">=2m", Range(120.0, None)),
        ("1.5s..2min", Range(1.5, 120.0)),
    ],
)
def test_duration_forms(value, expected):
    assert parse_query(f"x dur:{value}").duration == expected


def test_strict_bounds_exclude_the_value_and_ranges_intersect():
    d = parse_query("x dur:<30").duration
    assert d.contains(29.999) and not d.contains(30.0)
    assert parse_query("x dur:>1 dur:<=5").duration == Range(math.nextafter(1.0, math.inf), 5.0)
    assert parse_query("x sr:<48000").sample_rate == Range(None, 47999.0)
    assert parse_query("x ch:>1").channels == Range(2.0, None)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("48k", Range(48000.0, 48000.0)), (">=44.1k", Range(44100.0, None)),
     ("44100..96000", Range(44100.0, 96000.0)), ("48khz", Range(48000.0, 48000.0))],
)  # fmt: skip
def test_sample_rate_forms(value, expected):
    assert parse_query(f"x sr:{value}").sample_rate == expected


def test_channel_words_and_several_formats():
    assert parse_query("x ch:mono").channels == Range(1.0, 1.0)
    assert parse_query("x ch:stereo").channels == Range(2.0, 2.0)
    assert parse_query("x ext:wav,.FLAC ext:aiff").formats == ("wav", "flac", "aiff")


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ("dog dur:<abc", "cannot read 'dur:<abc': a duration is seconds"),
        ("dog dur:", "'dur:' has no value"),
        ("dog sr:loud", "cannot read 'sr:loud': a sample rate is Hz"),
        ("dog ch:two", "cannot read 'ch:two': a channel count"),
        ("dog dur:5parsecs", "cannot read 'dur:5parsecs'"),
        ('dog "unclosed', "unclosed quote"),
        ("dog -dur:<3", "a field cannot be negated"),
        ("dog dur:>10 dur:<5", "no value can match dur:"),
    ],
)
def test_malformed_queries_are_clear_errors(query, words):
    with pytest.raises(QuerySyntaxError) as err:
        parse_query(query)
    assert words in str(err.value)
    assert isinstance(err.value, SearchError)  # the CLI and API report SearchErrors as usage


def test_other_colons_and_dashes_stay_in_the_description():
    q = parse_query("ratio 3:1 note:C x-ray - hiss")
    assert q.text == "ratio 3:1 note:C x-ray - hiss"
    assert not q.has_filters()


def test_field_names_are_case_insensitive_and_have_aliases():
    q = parse_query("x DUR:<3 Duration:>1 format:mp3 channels:1 samplerate:8000")
    assert q.duration.hi < 3 and q.duration.lo > 1
    assert q.formats == ("mp3",)
    assert q.channels == Range(1.0, 1.0)
    assert q.sample_rate == Range(8000.0, 8000.0)


@pytest.mark.parametrize(
    ("text", "positive", "negative"),
    [
        ("dogs, no people", "dogs", "people"),
        ("rain without thunder", "rain", "thunder"),
        ("birds but not traffic", "birds", "traffic"),
        ("a car with no muffler", "a car with", "muffler"),
        ("no signal hum", "no signal hum", None),  # nothing before the cue: a description
        ("notable bells", "notable bells", None),  # a word, not the cue
        ("dogs, no", "dogs, no", None),
    ],
)
def test_semantic_negation_split(text, positive, negative):
    assert split_negation(text) == (positive, negative)
    q = parse_query(text)
    assert (q.positive, q.negative, q.text) == (positive, negative, text)


def test_fts_phrase_quotes_every_operator_away():
    assert fts_phrase("Door  Slam") == '"door slam"'
    assert fts_phrase('a "NEAR" b*') == '"a near b"'
    assert fts_phrase("!!") is None
