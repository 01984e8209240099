#!/usr/bin/env python3
"""A Maelstrom echo node with a chaos mode that drops some of its replies.

It speaks Maelstrom's protocol: one JSON message per line on stdin, one per
line on stdout, logs on stderr. Run it by hand, or under Maelstrom:

    ./main.py < tests/golden/chaos_half_drops_seed_42.in.jsonl
    CHAOS_DROP_RATE=0.2 maelstrom test -w echo --bin ./main.py --time-limit 10

Send `chaos_on` (with an optional `drop_rate`), `chaos_off` and
`chaos_stats` to steer the chaos gate, or start with `--drop-rate R`.
"""

import argparse
import enum
import json
import math
import os
import random
import re
import signal
import sys


DEFAULT_SEED = 42
DEFAULT_DROP_RATE = 0.1
# A pipe holds 64 KiB. A bigger buffer gains nothing from a file, and over
# 128 KiB malloc maps it afresh for each read and unmaps it after.
READ_SIZE = 1 << 16
SHOWN_CHARS = 40  # how much of a foreign string a log line quotes
RATE_SYNTAX = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
SEED_SYNTAX = re.compile(r"[+-]?[0-9]+")

# Replies to these requests, error replies included, always go out and
# never draw from the chaos generator.
CONTROL_REQUESTS = frozenset(("init", "chaos_on", "chaos_off", "chaos_stats"))


class ErrorCode(enum.IntEnum):
    """Maelstrom's error codes that this node uses."""

    NOT_SUPPORTED = 10
    MALFORMED_REQUEST = 12


class RPCError(Exception):
    """A request the node understood well enough to refuse with a code."""

    def __init__(self, code, text):
        """Keep the error code and the few words the reply will carry."""
        super().__init__(text)
        self.code = code
        self.text = text


def log(line):
    """Write one line to stderr, where Maelstrom keeps the node's log."""
    sys.stderr.write(line.replace("\n", " ") + "\n")


def brief(text):
    """Quote a string from the input safely for a one-line log entry."""
    cut = "..." if len(text) > SHOWN_CHARS else ""
    # What json.dumps does for a str, without its argument checks.
    return json.encoder.encode_basestring_ascii(text[:SHOWN_CHARS]) + cut


def refuse_constant(name):
    """Reject NaN and Infinity, which Python's json accepts but JSON lacks."""
    raise ValueError(f"{name} is not JSON")


def parse_float(text):
    """Parse a JSON float, refusing ones too large for a Python float."""
    number = float(text)
    if math.isinf(number):
        raise ValueError(f"number {text[:SHOWN_CHARS]} is too large")
    return number


DECODER = json.JSONDecoder(
    parse_float=parse_float, parse_constant=refuse_constant)

# json.dumps builds a new C encoder for every call; this one has the same
# settings and is built once.
ENCODER = json.encoder.c_make_encoder(
    None,  # no cycle check: a value parsed from JSON cannot contain itself
    json.JSONEncoder().default,  # raises TypeError, as json.dumps does
    json.encoder.encode_basestring_ascii,  # ensure_ascii
    None, ": ", ", ",  # indent, key separator, item separator
    False, False, True)  # sort_keys, skipkeys, allow_nan


def decode(line):
    """Return the JSON value that `line` holds, or raise ValueError."""
    try:
        value, end = DECODER.scan_once(line, 0)
        if end == len(line):
            return value
    except StopIteration:
        pass
    # Whitespace around the value, data after it or no value at all: the
    # full decoder skips the first and words the error for the others.
    return DECODER.decode(line)


def encode(value):
    """Return `value` serialized exactly as json.dumps(value) would be."""
    return "".join(ENCODER(value, 0))


def encode_deep(value):
    """Encode a value nested about as deep as the parser allows."""
    # The envelope and a deeper call stack need a few more levels than the
    # parser used, so the encoder gets them for this one call.
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(limit + 100)
    try:
        return encode(value)
    finally:
        sys.setrecursionlimit(limit)


def check_drop_rate(rate):
    """Return `rate` if it is a valid drop rate, else raise ValueError."""
    if type(rate) not in (int, float):
        raise ValueError("drop_rate must be a number")
    if not 0 <= rate <= 1:  # also false for NaN and the infinities
        raise ValueError("drop_rate must be from 0 to 1")
    return rate


class Node:
    """The node's state and one handler for each request type."""

    def __init__(self, seed=DEFAULT_SEED, drop_rate=None):
        """Start with chaos on only if a start-up drop rate was given."""
        self.node_id = None  # set by init; until then replies use `dest`
        self.node_ids = []
        self.rng = random.Random(seed)  # the chaos gate's only generator
        self.enabled = drop_rate is not None
        self.drop_rate = DEFAULT_DROP_RATE if drop_rate is None else drop_rate
        self.next_msg_id = 0
        self.total_sent = 0
        self.total_dropped = 0
        self.line_number = 0  # of stdin, blank lines included
        self.received = 0  # lines that were not blank
        self.rejected = 0
        self.out = []  # encoded lines waiting for the next write
        self.handlers = {
            "init": self.init,
            "echo": self.echo,
            "chaos_on": self.chaos_on,
            "chaos_off": self.chaos_off,
            "chaos_stats": self.chaos_stats,
        }

    # Handlers: each takes the request body and returns the reply body.

    def init(self, body):
        """Store this node's id and the cluster's ids."""
        node_id = body.get("node_id")
        node_ids = body.get("node_ids")
        if type(node_id) is not str:
            raise RPCError(ErrorCode.MALFORMED_REQUEST,
                           "node_id must be a string")
        if type(node_ids) is not list or any(
                type(n) is not str for n in node_ids):
            raise RPCError(ErrorCode.MALFORMED_REQUEST,
                           "node_ids must be a list of strings")
        self.node_id = node_id
        self.node_ids = node_ids
        return {"type": "init_ok"}

    def echo(self, body):
        """Send the `echo` value back unchanged."""
        if "echo" not in body:
            raise RPCError(ErrorCode.MALFORMED_REQUEST, "echo is missing")
        return {"type": "echo_ok", "echo": body["echo"]}

    def chaos_on(self, body):
        """Turn the chaos gate on, at the given or the configured rate."""
        rate = body.get("drop_rate", self.drop_rate)
        try:
            check_drop_rate(rate)
        except ValueError as error:
            raise RPCError(ErrorCode.MALFORMED_REQUEST, str(error)) from None
        self.enabled = True
        self.drop_rate = rate
        return {"type": "chaos_on_ok", "drop_rate": rate}

    def chaos_off(self, body):
        """Turn the chaos gate off; the rate is kept for the next chaos_on."""
        self.enabled = False
        return {"type": "chaos_off_ok"}

    def chaos_stats(self, body):
        """Report the gate's state and the counters as they stand."""
        return {
            "type": "chaos_stats_ok",
            "enabled": self.enabled,
            "drop_rate": self.drop_rate,
            "total_sent": self.total_sent,
            "total_dropped": self.total_dropped,
        }

    # The path every line takes: parse, check, dispatch, send.

    def handle_line(self, line):
        """Parse one input line and answer it, or log why it cannot be."""
        self.line_number += 1
        if type(line) is bytes:  # from a batch that was not all UTF-8
            try:
                line = line.decode()
            except UnicodeDecodeError as error:
                self.received += 1
                return self.reject(
                    f"not UTF-8 ({error.reason} at byte {error.start})")
        if not line or line.isspace():
            return  # blank lines are skipped without a word
        self.received += 1
        try:
            message = decode(line)
        except (ValueError, RecursionError) as error:
            return self.reject(f"not JSON ({error})")
        if type(message) is not dict:
            return self.reject("not a JSON object")
        src = message.get("src")
        dest = message.get("dest")
        body = message.get("body")
        if type(src) is not str:
            return self.reject("src is missing or not a string")
        if type(dest) is not str:
            return self.reject("dest is missing or not a string")
        if type(body) is not dict:
            return self.reject("body is missing or not an object")
        self.dispatch(src, dest, body)

    def reject(self, reason):
        """Log an input line that cannot be answered at all."""
        self.rejected += 1
        log(f"rejected input line {self.line_number}: {reason}")

    def dispatch(self, src, dest, body):
        """Run the handler for the body's type and send what it returns."""
        kind = body.get("type")
        handler = self.handlers.get(kind) if type(kind) is str else None
        try:
            if handler is not None:
                reply = handler(body)
            elif type(kind) is not str:
                raise RPCError(ErrorCode.MALFORMED_REQUEST,
                               "type is missing or not a string")
            elif kind.endswith("_ok") or kind == "error":
                log(f"ignored {brief(kind)} from {brief(src)}: "
                    "replies are not requests")
                return
            else:
                raise RPCError(ErrorCode.NOT_SUPPORTED,
                               f"unknown type {brief(kind)}")
        except RPCError as error:
            reply = {"type": "error", "code": error.code, "text": error.text}
        msg_id = body.get("msg_id")
        if type(msg_id) is not int:
            what = brief(kind) if type(kind) is str else "a body with no type"
            log(f"no reply to {what} from {brief(src)}: no integer msg_id")
            return
        reply["in_reply_to"] = msg_id
        # Only a known type can be a control request; `kind` may be a list.
        control = handler is not None and kind in CONTROL_REQUESTS
        self.send(dest if self.node_id is None else self.node_id, src, reply,
                  control)

    def send(self, src, dest, body, control):
        """Number one message, pass it through the chaos gate, queue it."""
        body["msg_id"] = msg_id = self.next_msg_id
        message = {"src": src, "dest": dest, "body": body}
        try:
            line = encode(message)
        except RecursionError:
            line = encode_deep(message)
        self.next_msg_id = msg_id + 1
        if (self.enabled and not control
                and self.rng.random() < self.drop_rate):
            self.total_dropped += 1
            log(f"dropped {body['type']} to {brief(dest)} (msg_id {msg_id})")
            return
        self.total_sent += 1
        self.out.append(line)

    def flush(self):
        """Write every queued line to stdout in one go, then the log."""
        if self.out:
            self.out.append("")
            sys.stdout.write("\n".join(self.out))
            self.out.clear()
            sys.stdout.flush()
        sys.stderr.flush()

    def summary(self):
        """Return the one-line account logged at exit."""
        return (f"exiting: {self.received} received ({self.rejected} "
                f"rejected), {self.total_sent} sent, "
                f"{self.total_dropped} dropped")


def handle_bytes(node, data):
    """Hand each line of `data` (whole lines, no final newline) to the node."""
    try:
        lines = data.decode().split("\n")
    except UnicodeDecodeError:
        lines = data.split(b"\n")  # handle_line names each line that is bad
    for line in lines:
        node.handle_line(line)


def serve(node, fd):
    """Read stdin until it ends, answering each batch before reading more."""
    pending = []  # pieces of a line whose newline has not come yet
    try:
        while chunk := os.read(fd, READ_SIZE):
            cut = chunk.rfind(b"\n")
            if cut < 0:
                pending.append(chunk)
                continue
            if pending:
                pending.append(chunk[:cut])
                handle_bytes(node, b"".join(pending))
                pending.clear()
            else:
                handle_bytes(node, chunk[:cut])
            if cut + 1 < len(chunk):
                pending.append(chunk[cut + 1:])
            node.flush()
        if pending:
            handle_bytes(node, b"".join(pending))
    finally:
        node.flush()  # also what was answered before a Ctrl-C or SIGTERM


class StartupError(Exception):
    """A start-up setting that the node cannot run with."""


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors take one line, as the node's do."""

    def error(self, message):
        """Report a bad command line in one line and exit with status 2."""
        raise StartupError(message)


def parse_rate(text):
    """Read a drop rate from the command line or the environment."""
    if not RATE_SYNTAX.fullmatch(text):
        raise StartupError(f"drop rate {text!r} is not a number")
    rate = float(text) if any(c in text for c in ".eE") else int(text)
    try:
        return check_drop_rate(rate)
    except ValueError as error:
        raise StartupError(f"{error}, not {text!r}") from None


def parse_seed(text):
    """Read the generator's seed, a whole number."""
    if not SEED_SYNTAX.fullmatch(text):
        raise StartupError(f"seed {text!r} is not a whole number")
    return int(text)


def settings(argv, environ):
    """Return (seed, drop_rate) from the flags, falling back on the env."""
    parser = Parser(description="A Maelstrom echo node with a chaos mode.",
                    allow_abbrev=False)
    parser.add_argument(
        "--drop-rate", metavar="R",
        help="start with chaos on, dropping this share of replies "
             "(env CHAOS_DROP_RATE)")
    parser.add_argument(
        "--seed", metavar="N",
        help=f"seed of the chaos generator (env CHAOS_SEED, "
             f"default {DEFAULT_SEED})")
    args = parser.parse_args(argv)
    rate = args.drop_rate
    if rate is None:
        rate = environ.get("CHAOS_DROP_RATE") or None
    seed = args.seed
    if seed is None:
        seed = environ.get("CHAOS_SEED") or None
    return (DEFAULT_SEED if seed is None else parse_seed(seed),
            None if rate is None else parse_rate(rate))


def terminate(signum, frame):
    """Turn SIGTERM into an orderly exit, as Ctrl-C is."""
    raise SystemExit(128 + signum)


def main(argv=None):
    """Run the node on stdin and stdout; return the exit status."""
    try:
        seed, drop_rate = settings(argv, os.environ)
    except StartupError as error:
        log(f"main.py: {error}")
        return 2
    # Flushed with each batch, even where PYTHONUNBUFFERED would write each
    # log line at once.
    sys.stderr.reconfigure(line_buffering=False, write_through=False)
    signal.signal(signal.SIGTERM, terminate)
    node = Node(seed, drop_rate)
    status = 0
    try:
        serve(node, sys.stdin.fileno())
    except KeyboardInterrupt:
        status = 130
    except SystemExit as stop:  # from terminate(), on SIGTERM
        status = stop.code
    except BrokenPipeError:
        # The reader is gone; Python must not try to flush stdout again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        log("stdout closed by the reader")
    log(node.summary())
    return status


if __name__ == "__main__":
    sys.exit(main())
