"""Property tests: whatever lines arrive, the node's stdout stays whole.

Each example runs main.py as a process over pipes on a batch of generated
lines, then holds what it wrote against a small model of the contract:

    python3 -m pytest -q tests/test_properties.py
"""

import json
import random
import re
import threading

from hypothesis import HealthCheck, given, settings, strategies as st

from support import node_env, run_node, start_node


DEFAULT_SEED = 42
DEFAULT_DROP_RATE = 0.1
CONTROL = frozenset(("init", "chaos_on", "chaos_off", "chaos_stats"))
REQUESTS = CONTROL | {"echo"}
FIELDS = REQUESTS | {"type", "msg_id", "in_reply_to", "node_id", "node_ids",
                     "drop_rate", "src", "dest", "body"}
DROP_LINE = re.compile(r"dropped (.*) \(msg_id (\d+)\)")
ANY_TEXT = object()  # an error's `text` is free wording: any string will do


def refuse_constant(name):
    """Refuse NaN and Infinity, which Python's json takes but JSON lacks."""
    raise ValueError(f"{name} is not JSON")


def finite_float(text):
    """Parse a JSON number as a float, refusing one too large to hold."""
    number = float(text)
    if number in (float("inf"), float("-inf")):
        raise ValueError(f"{text} overflows a float")
    return number


def unique_keys(pairs):
    """Build an object, refusing a key that appears twice in it."""
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"a key appears twice in {keys}")
    return dict(pairs)


# What the contract has the node accept: JSON as far as Python can hold it.
READ = json.JSONDecoder(
    parse_constant=refuse_constant, parse_float=finite_float)
# What stdout may hold: the same, and no key written twice.
STRICT = json.JSONDecoder(
    parse_constant=refuse_constant, parse_float=finite_float,
    object_pairs_hook=unique_keys)


def valid_rate(rate):
    """Say whether the contract accepts `rate` as a drop rate."""
    return type(rate) in (int, float) and 0 <= rate <= 1


def error(code):
    """Return the body of an error reply whose wording is left open."""
    return {"type": "error", "code": code, "text": ANY_TEXT}


def read_request(raw):
    """Return (src, dest, body) of a line the node can act on, else None."""
    try:
        message = READ.decode(raw.decode())
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    if type(message) is not dict:
        return None
    src, dest, body = (message.get(key) for key in ("src", "dest", "body"))
    if type(src) is str and type(dest) is str and type(body) is dict:
        return src, dest, body
    return None


class Model:
    """The contract's node, cut down to what decides each reply and drop."""

    def __init__(self, seed, drop_rate):
        """Start as the node starts, with this seed and start-up drop rate."""
        self.rng = random.Random(DEFAULT_SEED if seed is None else seed)
        self.enabled = drop_rate is not None
        self.drop_rate = DEFAULT_DROP_RATE if drop_rate is None else drop_rate
        self.node_id = None  # until init, replies come from the request's dest
        self.sent = 0
        self.dropped = 0
        self.messages = []  # (envelope, dropped) for each msg_id in turn

    def feed(self, data):
        """Act on every line of the node's whole input, given as bytes."""
        for raw in data.split(b"\n"):
            request = read_request(raw)
            if request is not None:
                self.receive(*request)

    def receive(self, src, dest, body):
        """Carry out one request and produce its reply if it earns one."""
        kind = body.get("type")
        if type(kind) is str and (kind.endswith("_ok") or kind == "error"):
            return
        reply = self.carry_out(kind, body)
        msg_id = body.get("msg_id")
        if type(msg_id) is not int:
            return

        reply["in_reply_to"] = msg_id
        reply["msg_id"] = len(self.messages)
        origin = dest if self.node_id is None else self.node_id
        control = type(kind) is str and kind in CONTROL
        dropped = (self.enabled and not control
                   and self.rng.random() < self.drop_rate)
        self.dropped += dropped
        self.sent += not dropped
        envelope = {"src": origin, "dest": src, "body": reply}
        self.messages.append((envelope, dropped))

    def carry_out(self, kind, body):
        """Apply a request's effect; return its reply body, ids not yet in."""
        if type(kind) is not str:
            return error(12)
        if kind == "init":
            node_id, node_ids = body.get("node_id"), body.get("node_ids")
            if type(node_id) is not str or type(node_ids) is not list:
                return error(12)
            if any(type(name) is not str for name in node_ids):
                return error(12)
            self.node_id = node_id
            return {"type": "init_ok"}
        if kind == "echo":
            if "echo" not in body:
                return error(12)
            return {"type": "echo_ok", "echo": body["echo"]}
        if kind == "chaos_on":
            rate = body["drop_rate"] if "drop_rate" in body else self.drop_rate
            if not valid_rate(rate):
                return error(12)
            self.enabled, self.drop_rate = True, rate
            return {"type": "chaos_on_ok", "drop_rate": rate}
        if kind == "chaos_off":
            self.enabled = False
            return {"type": "chaos_off_ok"}
        if kind == "chaos_stats":
            return {"type": "chaos_stats_ok", "enabled": self.enabled,
                    "drop_rate": self.drop_rate, "total_sent": self.sent,
                    "total_dropped": self.dropped}
        return error(10)


def read_output(line):
    """Parse one stdout line, failing on anything but a strict message."""
    assert line.isascii(), f"stdout line is not ASCII: {line!r}"
    message = STRICT.decode(line.decode())
    assert type(message) is dict, line
    assert type(message.get("src")) is str, line
    assert type(message.get("dest")) is str, line
    body = message.get("body")
    assert type(body) is dict and type(body.get("msg_id")) is int, line
    return message


def expected_line(envelope, actual):
    """Return the exact line the model expects, given the actual error text."""
    body = envelope["body"]
    if body.get("text") is ANY_TEXT:
        text = actual["body"].get("text")
        assert type(text) is str and text, f"error reply without text: {actual}"
        body = {**body, "text": text}
    return json.dumps({**envelope, "body": body}).encode()


def summary_count(line, word):
    """Return the number the exit summary gives next to `word`."""
    found = re.search(rf"(\d+) {word}|{word}\W*(\d+)", line)
    assert found, f"no {word} count in the exit line {line!r}"
    return int(found.group(1) or found.group(2))


def check_run(model, status, stdout, stderr):
    """Hold one finished run against the model, message by message."""
    log = stderr.decode(errors="replace")
    assert status == 0, log
    assert "Traceback" not in log, log
    assert stdout == b"" or stdout.endswith(b"\n"), stdout[-80:]

    assert log.endswith("\n"), f"no exit line on stderr: {log[-200:]!r}"
    events = log.split("\n")[:-1]
    lines = stdout.split(b"\n")[:-1]
    sent = [read_output(line) for line in lines]
    drops = [m for m in map(DROP_LINE.fullmatch, events) if m]
    sent_ids = [message["body"]["msg_id"] for message in sent]
    dropped_ids = [int(match.group(2)) for match in drops]
    # Each answerable request produced one message: written or dropped.
    assert sorted(sent_ids + dropped_ids) == list(range(len(model.messages)))
    assert sent_ids == sorted(sent_ids), "stdout is out of msg_id order"
    assert dropped_ids == [i for i, (_, gone) in enumerate(model.messages)
                           if gone], "the drops differ from the seed's"

    for line, message in zip(lines, sent):
        envelope, _ = model.messages[message["body"]["msg_id"]]
        assert line == expected_line(envelope, message)
    for match in drops:
        envelope, _ = model.messages[int(match.group(2))]
        assert envelope["body"]["type"] in match.group(1).split(), match[0]
    summary = events[-1]
    assert summary_count(summary, "sent") == len(sent_ids) == model.sent
    assert summary_count(summary, "dropped") == len(drops) == model.dropped


# Strategies. Text reaches into every plane, lone surrogates and NUL included.

SPECIAL = "\x00\n\r\t\"\\\x7f\x85\u2028\ufeff\ud800\udfff\u00e9\U0001f600"
TEXT = st.text(st.characters(codec=None, exclude_categories=())
               | st.sampled_from(SPECIAL), max_size=8)
CLIENTS = st.sampled_from(["c1", "c2", "c3"]) | TEXT
NODES = st.sampled_from(["n1", "n2"]) | TEXT
FINITE = st.floats(allow_nan=False, allow_infinity=False)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | FINITE | TEXT,
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=6)
RATES = st.floats(0, 1) | st.sampled_from([0, 1])
NOT_STR = JSON_VALUES.filter(lambda value: type(value) is not str)
BAD_RATES = (st.floats(min_value=1, exclude_min=True, allow_infinity=False)
             | st.floats(max_value=0, exclude_max=True, allow_infinity=False)
             | st.integers().filter(lambda n: n not in (0, 1))
             | JSON_VALUES.filter(lambda value: not valid_rate(value)))
# For each field, values of a kind the contract refuses in it.
WRONG_KINDS = {
    ("src",): NOT_STR,
    ("dest",): NOT_STR,
    ("body",): JSON_VALUES.filter(lambda value: type(value) is not dict),
    ("body", "type"): NOT_STR,
    ("body", "msg_id"): st.sampled_from([True, False, None, 1.0, 2.5, "3"])
    | JSON_VALUES.filter(lambda value: type(value) is not int),
    ("body", "node_id"): NOT_STR,
    ("body", "node_ids"): NOT_STR.filter(lambda value: type(value) is not list)
    | st.tuples(st.lists(NODES, max_size=2), NOT_STR).map(
        lambda pair: pair[0] + [pair[1]]),
    ("body", "drop_rate"): BAD_RATES,
}
BAD_NUMBERS = (st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400",
                                "-1E999", "2.5e308"])
               | st.integers(4301, 6000).map(lambda digits: "9" * digits))
NOT_UTF8 = st.sampled_from(
    [b"\xff", b"\x80", b"\xc3", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf4\x90\x80"])


@st.composite
def requests(draw, kinds=tuple(sorted(REQUESTS)), echoes=JSON_VALUES,
             silent=False):
    """Draw a well-formed request of one of `kinds`, as a dict.

    When `silent`, one in eight has no integer msg_id: carried out, unanswered.
    """
    kind = draw(st.sampled_from(kinds))
    body = {"type": kind, "msg_id": draw(st.integers())}
    if silent and draw(st.integers(0, 7)) == 0:
        body["msg_id"] = draw(st.sampled_from([True, None, 1.0, "1"]))
        if draw(st.booleans()):
            del body["msg_id"]
    if kind == "init":
        body["node_id"] = draw(NODES)
        body["node_ids"] = draw(st.lists(NODES, max_size=3))
    elif kind == "echo":
        body["echo"] = draw(echoes)
    elif kind == "chaos_on" and draw(st.booleans()):
        body["drop_rate"] = draw(RATES)
    message = {"src": draw(CLIENTS), "dest": draw(NODES), "body": body}
    if draw(st.booleans()):  # Maelstrom adds an `id`; the node ignores it
        message["id"] = draw(st.integers(0, 10**6))
    message["body"] = dict(draw(st.permutations(list(body.items()))))
    return message


@st.composite
def serialized(draw, value):
    """Draw one way of writing `value` as a line: spacing, raw or escaped."""
    separators = draw(st.sampled_from([None, (",", ":"), (" , ", " : ")]))
    raw = draw(st.sampled_from([False, False, False, True]))
    text = json.dumps(value, ensure_ascii=not raw, separators=separators)
    # A raw lone surrogate makes bytes that are not UTF-8: one more hazard.
    return text.encode("utf-8", "surrogatepass")


def request_lines(kinds=tuple(sorted(REQUESTS)), echoes=JSON_VALUES,
                  silent=False):
    """Lines holding one well-formed request each."""
    return requests(kinds, echoes, silent).flatmap(serialized)


def locate(message, path):
    """Return the object holding the field at `path`, and its key."""
    holder = message
    for key in path[:-1]:
        holder = holder[key]
    return holder, path[-1]


@st.composite
def missing_field(draw):
    """A request with one field taken out."""
    message = draw(requests())
    paths = [("src",), ("dest",), ("body",), ("body", "type"),
             ("body", "msg_id")]
    paths += [("body", key) for key in ("echo", "node_id", "node_ids")
              if key in message["body"]]
    holder, key = locate(message, draw(st.sampled_from(paths)))
    del holder[key]
    return draw(serialized(message))


@st.composite
def wrong_kind(draw):
    """A request with one field holding a value of the wrong kind."""
    message = draw(requests())
    body = message["body"]
    optional = ("node_id", "node_ids", "drop_rate")
    paths = [path for path in WRONG_KINDS
             if path[-1] not in optional or path[-1] in body]
    if body["type"] == "chaos_on" and "drop_rate" not in body:
        paths.append(("body", "drop_rate"))
    path = draw(st.sampled_from(paths))
    holder, key = locate(message, path)
    holder[key] = draw(WRONG_KINDS[path])
    return draw(serialized(message))


@st.composite
def retyped(draw, types):
    """A request whose type is replaced by one drawn from `types`."""
    message = draw(requests())
    message["body"]["type"] = draw(types)
    return draw(serialized(message))


@st.composite
def extra_keys(draw):
    """A request with keys no request type defines, and an in_reply_to."""
    message = draw(requests())
    extras = draw(st.dictionaries(
        TEXT.filter(lambda key: key not in FIELDS), JSON_VALUES, max_size=3))
    message["body"].update(extras)
    message["body"]["in_reply_to"] = draw(st.integers())
    return draw(serialized(message))


@st.composite
def bad_number(draw):
    """An echo request whose payload holds a number JSON or Python refuses."""
    message = draw(requests(("echo",)))
    slot = draw(st.sampled_from(["%s", "[1, %s]", '{"n": %s}']))
    message["body"]["echo"] = "\x00HERE\x00"  # the spot the number goes
    line = json.dumps(message)
    number = slot % draw(BAD_NUMBERS)
    return line.replace('"\\u0000HERE\\u0000"', number, 1).encode()


@st.composite
def truncated(draw):
    """A request line cut off before its end."""
    line = draw(request_lines())
    return line[:draw(st.integers(1, len(line) - 1))]


@st.composite
def spliced(draw, pieces):
    """A request line with a piece of hostile bytes put in somewhere."""
    line = draw(request_lines())
    at = draw(st.integers(0, len(line)))
    return line[:at] + draw(pieces) + line[at:]


REPLY_TYPES = (st.sampled_from(["echo_ok", "init_ok", "chaos_stats_ok",
                                "error", "_ok"])
               | TEXT.map(lambda text: text + "_ok"))
UNKNOWN_TYPES = TEXT.filter(lambda text: text not in REQUESTS
                            and text != "error" and not text.endswith("_ok"))
HOSTILE = {
    "missing field": missing_field(),
    "wrong kind": wrong_kind(),
    "reply type": retyped(REPLY_TYPES),
    "unknown type": retyped(UNKNOWN_TYPES),
    "extra keys": extra_keys(),
    "any JSON value": JSON_VALUES.flatmap(serialized),
    "any envelope": st.fixed_dictionaries(
        {"src": CLIENTS, "dest": NODES, "body": JSON_VALUES}
    ).flatmap(serialized),
    "any bytes": st.binary(max_size=80).map(
        lambda data: data.replace(b"\n", b"")),
    "bad number": bad_number(),
    "truncated": truncated(),
    "not UTF-8": spliced(NOT_UTF8),
    "raw NUL": spliced(st.just(b"\x00")),
    "blank": st.sampled_from([b"", b" ", b"\t", b"\r", b" \t \r"]),
}
ANY_LINE = st.one_of(request_lines(), *HOSTILE.values())
# Mostly echoes, so that long runs of draws meet chaos being switched.
TRAFFIC = ("echo",) * 5 + tuple(sorted(CONTROL))
TRAFFIC_LINES = request_lines(TRAFFIC, st.integers() | TEXT, silent=True)


@st.composite
def batches(draw):
    """Draw a whole input: a line of every hostile kind, then a random mix."""
    lines = [draw(kind) for kind in HOSTILE.values()]
    lines += draw(st.lists(ANY_LINE, max_size=10))
    lines += draw(st.lists(TRAFFIC_LINES, min_size=5, max_size=40))
    lines = draw(st.permutations(lines))
    ends = [draw(st.sampled_from([b"\n", b"\r\n"])) for _ in lines]
    data = b"".join(line + end for line, end in zip(lines, ends))
    if draw(st.booleans()):  # the last line may end without a newline
        data = data[:-len(ends[-1])]
    return data


# A start-up setting: (seed or None, drop rate or None, given by flag?).
STARTUP = st.tuples(st.none() | st.integers(), st.none() | RATES,
                    st.booleans())


def startup_command(seed, rate, by_flag):
    """Return the arguments and environment that start the node so."""
    args, variables = [], {}
    if seed is not None:
        args += ["--seed", str(seed)]
        variables["CHAOS_SEED"] = str(seed)
    if rate is not None:
        args += ["--drop-rate", repr(rate)]
        variables["CHAOS_DROP_RATE"] = repr(rate)
    if by_flag:
        return args, node_env()
    return [], node_env(**variables)


# Each example starts a process; on a busy machine that is slow, not wrong.
RUNS = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


def run_model(data, seed, rate):
    """Return the model after it has read all of `data`."""
    model = Model(seed, rate)
    model.feed(data)
    return model


@settings(RUNS, max_examples=80)
@given(data=batches(), startup=STARTUP)
def test_hostile_lines_leave_every_reply_in_place(data, startup):
    """Any mix of lines leaves stdout strict and each reply accounted for."""
    args, env = startup_command(*startup)
    done = run_node(data, *args, env=env)
    check_run(run_model(data, *startup[:2]), done.returncode, done.stdout,
              done.stderr)


@settings(RUNS, max_examples=50)
@given(lines=st.lists(TRAFFIC_LINES, min_size=1, max_size=200),
       startup=STARTUP)
def test_drops_follow_the_seed(lines, startup):
    """Long runs of valid traffic drop exactly what the seed dictates."""
    data = b"\n".join(lines) + b"\n"
    args, env = startup_command(*startup)
    done = run_node(data, *args, env=env)
    check_run(run_model(data, *startup[:2]), done.returncode, done.stdout,
              done.stderr)


def drain(stream, chunks):
    """Read a stream to its end into `chunks`, so the node never blocks."""
    chunks.append(stream.read())


def run_in_pieces(pieces, args, env):
    """Run the node, writing its input one piece per write; return it all."""
    node = start_node(*args, env=env)
    out, err = [], []
    readers = [threading.Thread(target=drain, args=(node.stdout, out)),
               threading.Thread(target=drain, args=(node.stderr, err))]
    for reader in readers:
        reader.start()
    for piece in pieces:
        view = memoryview(piece)
        while view:  # a raw pipe may take less than it was offered
            view = view[node.stdin.write(view):]
    node.stdin.close()
    for reader in readers:
        reader.join(timeout=120)
    return node.wait(timeout=120), out[0], err[0]


@settings(RUNS, max_examples=40)
@given(data=batches(), cuts=st.lists(st.integers(0), max_size=8),
       startup=STARTUP)
def test_input_split_anywhere(data, cuts, startup):
    """Input cut mid-line, even mid-character, is framed as if whole."""
    points = sorted({cut % (len(data) + 1) for cut in cuts})
    bounds = [0, *points, len(data)]
    pieces = [data[a:b] for a, b in zip(bounds, bounds[1:])]
    args, env = startup_command(*startup)
    check_run(run_model(data, *startup[:2]),
              *run_in_pieces(pieces, args, env))
