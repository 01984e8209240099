"""Hostile input, one named case each: the node logs it and keeps answering.

Every case runs main.py as a process over pipes, checks stdout byte for byte
where the contract fixes it, looks for the logged reason on stderr, and
shows that a valid request sent after the bad input is still answered:

    python3 -m pytest -q tests/test_hostile.py
"""

import json
import random
import re

import pytest

from support import WAIT, read_lines, request, run_node, start_node


AFTER = request("echo", 99, echo="after")  # the valid line after bad input
DEEPEST = 1200  # nesting depths probed for the parser's limit


def run(data, *args):
    """Run the node to the end of `data`; return its stdout and log events.

    The events are the stderr lines before the closing summary line.
    """
    done = run_node(data, *args)
    log = done.stderr.decode()
    assert done.returncode == 0, log
    assert "Traceback" not in log, log
    events = log.splitlines()
    assert events and "sent" in events[-1] and "dropped" in events[-1], log
    return done.stdout.decode("ascii"), events[:-1]


def line(body, dest="c1", src="n1"):
    """Return the exact stdout line of a reply whose body holds `body`."""
    return '{"src": "%s", "dest": "%s", "body": {%s}}\n' % (src, dest, body)


def echo_ok(echo, in_reply_to, msg_id, dest="c1", src="n1"):
    """Return the exact line of an echo_ok that carries the JSON text `echo`."""
    return line(f'"type": "echo_ok", "echo": {echo}, '
                f'"in_reply_to": {in_reply_to}, "msg_id": {msg_id}', dest, src)


def after(msg_id):
    """Return the reply to AFTER when it gets this msg_id."""
    return echo_ok('"after"', 99, msg_id)


def envelope(body, src="c1", dest="n1"):
    """Return one input line carrying `body` exactly as given."""
    return json.dumps({"src": src, "dest": dest, "body": body}) + "\n"


def echo_text(payload, msg_id=1):
    """Return an echo request line whose payload is the JSON text given."""
    return ('{"src": "c1", "dest": "n1", "body": {"type": "echo", "echo": '
            f'{payload}, "msg_id": {msg_id}}}}}\n')


def assert_reason(events, pattern):
    """Assert exactly one event was logged and it gives a fitting reason."""
    assert len(events) == 1, events
    assert re.search(pattern, events[0], re.IGNORECASE), events[0]


def error_reply(text_line, code, in_reply_to, msg_id):
    """Assert `text_line` is exactly an error reply, whatever its wording."""
    text = json.loads(text_line)["body"]["text"]
    assert type(text) is str and text, text_line
    assert text_line == line(
        f'"type": "error", "code": {code}, "text": {json.dumps(text)}, '
        f'"in_reply_to": {in_reply_to}, "msg_id": {msg_id}')


# Framing and the ends of input.


def test_last_line_without_newline():
    """A last line with no newline is answered, and the reply ends in one."""
    data = request("echo", 1, echo="a") + request("echo", 2, echo="b")
    stdout, events = run(data.rstrip("\n"))
    assert stdout == echo_ok('"a"', 1, 0) + echo_ok('"b"', 2, 1)
    assert events == []


def test_only_line_without_newline():
    """A single request with no newline at all is still answered."""
    stdout, events = run(request("echo", 1, echo="a").rstrip("\n"))
    assert stdout == echo_ok('"a"', 1, 0)
    assert events == []


def test_empty_input():
    """No input at all: nothing on stdout, the summary, status 0."""
    assert run(b"") == ("", [])


def test_end_of_input_before_init():
    """Requests answered before any init come from their dest; exit is clean."""
    data = (request("echo", 1, dest="n3", echo="x")
            + request("chaos_stats", 2, dest="n4"))
    stdout, events = run(data)
    assert stdout == echo_ok('"x"', 1, 0, src="n3") + line(
        '"type": "chaos_stats_ok", "enabled": false, "drop_rate": 0.1, '
        '"total_sent": 1, "total_dropped": 0, "in_reply_to": 2, "msg_id": 1',
        src="n4")
    assert events == []


def test_end_of_input_mid_line():
    """A line cut off by the end of input is logged, not answered."""
    cut = request("echo", 2, echo="lost")[:40]
    stdout, events = run(request("echo", 1, echo="kept") + cut)
    assert stdout == echo_ok('"kept"', 1, 0)
    assert_reason(events, r"JSON")


def test_blank_lines_and_crlf():
    """Blank, whitespace and CRLF-ended lines pass without a word."""
    data = ("\n" + "   \n" + "\t\r\n" + "\r\n"
            + request("echo", 1, echo="a").replace("\n", "\r\n")
            + request("echo", 2, echo="b").replace("\n", " \t\r\n")
            + "\n\n"
            + request("echo", 3, echo="c").replace("\n", "\r\n"))
    stdout, events = run(data)
    assert stdout == (echo_ok('"a"', 1, 0) + echo_ok('"b"', 2, 1)
                      + echo_ok('"c"', 3, 2))
    assert events == []


# Requests the node acts on but must not answer, or answers its own way.


BAD_MSG_IDS = {
    "missing": {},
    "null": {"msg_id": None},
    "float": {"msg_id": 1.5},
    "whole float": {"msg_id": 2.0},
    "true": {"msg_id": True},
    "false": {"msg_id": False},
    "string": {"msg_id": "3"},
    "list": {"msg_id": [3]},
}


@pytest.mark.parametrize("msg_id", BAD_MSG_IDS.values(), ids=BAD_MSG_IDS)
def test_msg_id_not_an_integer(msg_id):
    """No reply and no msg_id spent, but the request is carried out."""
    data = (envelope({"type": "chaos_on", "drop_rate": 0.25, **msg_id})
            + envelope({"type": "echo", "echo": "x", **msg_id})
            + request("chaos_stats", 9))
    stdout, events = run(data)
    assert stdout == line(
        '"type": "chaos_stats_ok", "enabled": true, "drop_rate": 0.25, '
        '"total_sent": 0, "total_dropped": 0, "in_reply_to": 9, "msg_id": 0')
    assert len(events) == 2, events
    assert all("msg_id" in event for event in events), events


def test_init_without_msg_id_still_sets_node_id():
    """An init with no msg_id stores the node id that later replies use."""
    data = (envelope({"type": "init", "node_id": "n7", "node_ids": ["n7"]})
            + request("echo", 1, echo="x"))
    stdout, events = run(data)
    assert stdout == echo_ok('"x"', 1, 0, src="n7")
    assert_reason(events, r"msg_id")


def test_chaos_off_without_msg_id_still_turns_chaos_off():
    """At drop rate 1 every echo goes, until a chaos_off with no msg_id."""
    data = (request("echo", 1, echo="a") + envelope({"type": "chaos_off"})
            + request("echo", 2, echo="b"))
    stdout, events = run(data, "--drop-rate", "1")
    assert stdout == echo_ok('"b"', 2, 1)
    assert len(events) == 2, events
    assert re.fullmatch(r"dropped echo_ok .*\(msg_id 0\)", events[0]), events
    assert "msg_id" in events[1], events


UNANSWERABLE = {
    "body is a string": ('{"src": "c1", "dest": "n1", "body": "echo"}',
                         r"body"),
    "body is null": ('{"src": "c1", "dest": "n1", "body": null}', r"body"),
    "body is a list": ('{"src": "c1", "dest": "n1", "body": [1]}', r"body"),
    "no body": ('{"src": "c1", "dest": "n1"}', r"body"),
    "no src": ('{"dest": "n1", "body": {"type": "echo", "msg_id": 1}}',
               r"src"),
    "src is a number": ('{"src": 1, "dest": "n1", "body": {"type": "echo"}}',
                        r"src"),
    "dest is null": ('{"src": "c1", "dest": null, "body": {"type": "echo"}}',
                     r"dest"),
    "a list": ('[{"src": "c1", "dest": "n1", "body": {}}]', r"object"),
    "a string": ('"echo"', r"object"),
    "a number": ("7", r"object"),
    "null": ("null", r"object"),
}


@pytest.mark.parametrize("text, reason", UNANSWERABLE.values(),
                         ids=UNANSWERABLE)
def test_unanswerable_message(text, reason):
    """A message with no usable src, dest or body is logged and skipped."""
    stdout, events = run(text + "\n" + AFTER)
    assert stdout == after(0)
    assert_reason(events, reason)


def test_request_carrying_in_reply_to():
    """A request's own in_reply_to is ignored; the reply answers its msg_id."""
    data = envelope(
        {"type": "echo", "echo": "x", "in_reply_to": 5, "msg_id": 7})
    stdout, events = run(data + AFTER)
    assert stdout == echo_ok('"x"', 7, 0) + after(1)
    assert events == []


def test_same_msg_id_from_several_clients():
    """Each client gets its own reply, sent to its own src."""
    data = "".join(request("echo", 1, src=client, echo=client)
                   for client in ("c1", "c2", "c3"))
    stdout, events = run(data)
    assert stdout == (echo_ok('"c1"', 1, 0, dest="c1")
                      + echo_ok('"c2"', 1, 1, dest="c2")
                      + echo_ok('"c3"', 1, 2, dest="c3"))
    assert events == []


@pytest.mark.parametrize("body, code", [
    ({"type": "bogus"}, 10),
    ({"type": ""}, 10),
    ({"type": "Echo"}, 10),
    ({}, 12),
    ({"type": 5}, 12),
    ({"type": None}, 12),
    ({"type": ["echo"]}, 12),
], ids=["unknown", "empty", "wrong case", "no type", "number", "null",
        "list"])
def test_unknown_or_missing_type(body, code):
    """An unknown type gets error 10, a missing one error 12; then on."""
    stdout, events = run(envelope({**body, "msg_id": 1}) + AFTER)
    first, second = stdout.splitlines(keepends=True)
    error_reply(first, code, 1, 0)
    assert second == after(1)
    assert events == []


@pytest.mark.parametrize("kind", ["echo_ok", "init_ok", "error", "x_ok"])
def test_replies_are_not_requests(kind):
    """A message typed as a reply is logged and ignored: no error back."""
    stdout, events = run(envelope({"type": kind, "msg_id": 1}) + AFTER)
    assert stdout == after(0)
    assert_reason(events, re.escape(kind))


# Numbers and nesting that JSON or Python cannot hold.


BAD_NUMBERS = {
    "NaN": ("NaN", r"NaN"),
    "-Infinity": ("-Infinity", r"Infinity"),
    "Infinity": ("Infinity", r"Infinity"),
    "1e400": ("1e400", r"1e400|large|range|overflow"),
    "-1E999": ("-1E999", r"1E999|large|range|overflow"),
    "5000 digits": ("7" * 5000, r"digit|large|limit"),
    "-5000 digits": ("-" + "7" * 5000, r"digit|large|limit"),
}


@pytest.mark.parametrize("number, reason", BAD_NUMBERS.values(),
                         ids=BAD_NUMBERS)
def test_number_json_or_python_cannot_hold(number, reason):
    """The line is rejected with its reason; the next line is answered."""
    stdout, events = run(echo_text(f"[1, {number}]") + AFTER)
    assert stdout == after(0)
    assert_reason(events, reason)


@pytest.mark.parametrize("number", ["7" * 4300, "-" + "7" * 4300,
                                    "1.7976931348623157e+308", "5e-324"],
                         ids=["4300 digits", "-4300 digits", "largest float",
                              "smallest float"])
def test_numbers_at_the_limits_are_echoed(number):
    """Numbers just inside what Python holds come back exactly."""
    stdout, events = run(echo_text(f"[1, {number}]") + AFTER)
    assert stdout == echo_ok(f"[1, {number}]", 1, 0) + after(1)
    assert events == []


def nested(depth, shape):
    """Return the JSON text of a list or object nested `depth` deep."""
    if shape == "list":
        return "[" * depth + "]" * depth
    return '{"a": ' * (depth - 1) + "{}" + "}" * (depth - 1)


def nested_echo(depth, shape):
    """Return an echo request whose payload is nested `depth` deep."""
    return echo_text(nested(depth, shape), msg_id=depth)


@pytest.mark.parametrize("shape", ["list", "object"])
def test_nesting_5000_deep(shape):
    """A payload nested 5000 deep is rejected; the next line is answered."""
    stdout, events = run(nested_echo(5000, shape) + AFTER)
    assert stdout == after(0)
    assert_reason(events, r"recursion|deep|nest")


@pytest.mark.parametrize("shape", ["list", "object"])
def test_nesting_up_to_the_parsers_limit(shape):
    """Every depth the parser takes is echoed exactly; past it, rejected.

    Depth d is sent with msg_id d, so the replies show where the limit is.
    """
    depths = range(1, DEEPEST + 1)
    data = "".join(nested_echo(depth, shape) for depth in depths)
    stdout, events = run(data + AFTER)
    replies = stdout.splitlines(keepends=True)
    assert replies[-1] == after(len(replies) - 1)

    limit = len(replies) - 1  # depths 1..limit were answered, in order
    assert 100 < limit < DEEPEST, f"no limit found up to {DEEPEST}"
    for depth, reply in enumerate(replies[:-1], start=1):
        assert reply == echo_ok(nested(depth, shape), depth, depth - 1)
    assert len(events) == DEEPEST - limit  # one per rejected depth
    assert all(re.search(r"recursion|deep|nest", event, re.IGNORECASE)
               for event in events), events[:3]
    print(f"{shape}: echoed up to depth {limit}, rejected from {limit + 1}")


# Text: non-ASCII, surrogates, bytes that are not UTF-8, NUL.


def test_non_ascii_text_is_escaped():
    """Raw UTF-8 in comes out as \\uXXXX escapes, so stdout stays ASCII."""
    body = {"type": "echo", "echo": {"ключ": "héllo ✓ 😀 日本"}, "msg_id": 1}
    data = json.dumps({"src": "c1", "dest": "n1", "body": body},
                      ensure_ascii=False) + "\n"
    stdout, events = run(data.encode() + AFTER.encode())
    assert stdout == echo_ok(
        r'{"\u043a\u043b\u044e\u0447": '
        r'"h\u00e9llo \u2713 \ud83d\ude00 \u65e5\u672c"}', 1, 0) + after(1)
    assert events == []


@pytest.mark.parametrize("escapes", [
    r"\ud800", r"\udfff", r"\udfff\ud800", r"x\ud83dy", r"\ud83d\ude00",
])
def test_surrogate_escapes_come_back_the_same(escapes):
    """A lone surrogate escape, or a pair, is echoed as the same escapes."""
    stdout, events = run(echo_text(f'"{escapes}"') + AFTER)
    assert stdout == echo_ok(f'"{escapes}"', 1, 0) + after(1)
    assert events == []


NOT_UTF8 = {
    "0xff": b"\xff",
    "lone continuation": b"\x80",
    "cut sequence": b"\xc3(",
    "encoded surrogate": b"\xed\xa0\x80",
    "overlong slash": b"\xc0\xaf",
    "past U+10FFFF": b"\xf4\x90\x80\x80",
    "Latin-1": "caf\xe9".encode("latin-1"),
}


@pytest.mark.parametrize("raw", NOT_UTF8.values(), ids=NOT_UTF8)
def test_bytes_not_utf8(raw):
    """A line that is not UTF-8 is rejected; its neighbours are answered."""
    good = request("echo", 1, echo="é").encode()
    bad = (b'{"src": "c1", "dest": "n1", "body": {"type": "echo", "echo": "'
           + raw + b'", "msg_id": 2}}\n')
    stdout, events = run(good + bad + AFTER.encode())
    assert stdout == echo_ok(r'"\u00e9"', 1, 0) + after(1)
    assert_reason(events, r"UTF-?8|decod")


@pytest.mark.parametrize("at", [0, 20, 63, 80], ids=[
    "line start", "between tokens", "inside a string", "before the end"])
def test_raw_nul_byte(at):
    """A raw NUL anywhere in a line makes it invalid JSON: logged, skipped."""
    text = request("echo", 1, echo="ab").encode()
    assert text[at - 1:at + 1] == b"ab" or at != 63  # inside the string
    stdout, events = run(text[:at] + b"\x00" + text[at:] + AFTER.encode())
    assert stdout == after(0)
    assert_reason(events, r"JSON|control|NUL")


def test_escaped_nul_is_echoed():
    """The escape \\u0000 is valid JSON and comes back as the same escape."""
    stdout, events = run(echo_text(r'"a\u0000b"') + AFTER)
    assert stdout == echo_ok(r'"a\u0000b"', 1, 0) + after(1)
    assert events == []


# Size and the pipes themselves.


@pytest.mark.parametrize("size", [1 << 20, 16 << 20], ids=["1MiB", "16MiB"])
def test_large_payload_is_echoed_exactly(size):
    """A payload far larger than one read comes back byte for byte."""
    payload = random.Random(size).randbytes(size // 2).hex()
    stdout, events = run(request("echo", 1, echo=payload) + AFTER)
    assert stdout == echo_ok(f'"{payload}"', 1, 0) + after(1)
    assert events == []


def test_lines_in_one_write_are_answered_at_once():
    """Two lines and half a third in one write: two replies, no waiting."""
    node = start_node()
    third = request("echo", 3, echo="c").encode()
    node.stdin.write(request("echo", 1, echo="a").encode()
                     + request("echo", 2, echo="b").encode() + third[:30])
    assert read_lines(node.stdout, 2) == (echo_ok('"a"', 1, 0)
                                          + echo_ok('"b"', 2, 1))
    node.stdin.write(third[30:])
    assert read_lines(node.stdout, 1) == echo_ok('"c"', 3, 2)
    node.stdin.close()
    assert node.stdout.read() == b""
    assert node.wait(timeout=WAIT) == 0
    assert "Traceback" not in node.stderr.read().decode()
