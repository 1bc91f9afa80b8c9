"""The JSON-lines progress parser: chunking, partial lines, garbage, and odd values."""

from __future__ import annotations

import json

from MambaMIMSegmenterLib.progress import JsonLinesParser, ProgressEvent, parseLine


def _line(**record) -> str:
    return json.dumps(record) + "\n"


def test_partial_lines_are_buffered_until_the_newline():
    parser = JsonLinesParser()
    text = _line(stage="inference", fraction=0.25, eta_s=10.0, message="window 1/4")
    assert parser.feed(text[:7]) == []
    assert parser.feed(text[7:20]) == []
    (event,) = parser.feed(text[20:])
    assert event == ProgressEvent("inference", 0.25, 10.0, "window 1/4")


def test_every_chunking_of_a_stream_gives_the_same_events():
    stream = (
        _line(stage="load", fraction=0.0, eta_s=None, message="reading")
        + "Warning: some library printed this\n"
        + _line(stage="inference", fraction=0.5, eta_s=3, message="Ünïcödé ✓")
        + _line(stage="done", fraction=1.0, eta_s=0, message="", outputs={"labels": "/tmp/l.nrrd"})
    ).encode()
    expected = JsonLinesParser().feed(stream)
    assert [type(i).__name__ for i in expected] == ["ProgressEvent", "str", "ProgressEvent", "ProgressEvent"]
    for size in (1, 2, 3, 5, 17):
        parser = JsonLinesParser()
        items = []
        for start in range(0, len(stream), size):  # splits multi-byte UTF-8 characters too
            items += parser.feed(stream[start : start + size])
        assert items + parser.flush() == expected
    assert expected[-1].terminal and expected[-1].outputs == {"labels": "/tmp/l.nrrd"}
    assert expected[2].message == "Ünïcödé ✓"


def test_garbage_becomes_log_text_and_never_raises():
    garbage = [
        "{not json",
        '{"fraction": 0.5}',  # no stage
        '{"stage": 3, "fraction": 0.5}',  # stage not a string
        '{"stage": "x", "fraction": "half"}',
        '{"stage": "x", "fraction": NaN}',
        "[1, 2, 3]",
        "Traceback (most recent call last):",
        "\x00\x01binary",
    ]
    for line in garbage:
        assert isinstance(parseLine(line), str), line


def test_values_are_clamped_and_sanitised():
    event = parseLine('{"stage": "inference", "fraction": 1.7, "eta_s": -4, "message": null, "outputs": 5}')
    assert event.fraction == 1.0 and event.eta_s == 0.0 and event.message == "" and event.outputs == {}
    assert parseLine('{"stage": "x", "fraction": -1, "eta_s": "soon"}').eta_s is None
    assert parseLine('{"stage": "x", "fraction": 0.1, "eta_s": true}').eta_s is None


def test_crlf_and_a_last_line_without_newline():
    parser = JsonLinesParser()
    items = parser.feed(b'{"stage": "a", "fraction": 0.1}\r\n{"stage": "done", "fraction": 1}')
    assert [i.stage for i in items] == ["a"]
    (last,) = parser.flush()
    assert last.stage == "done" and last.terminal
    assert parser.flush() == []


def test_describe_formats_eta():
    assert (
        ProgressEvent("inference", 0.42, 75, "window 5/12").describe()
        == "inference 42% (about 1 min 15 s left) window 5/12"
    )
    assert ProgressEvent("load", 0.0).describe() == "load 0%"
