"""Helpers the tests share: run main.py as a process, build request lines."""

import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
MAIN = ROOT / "main.py"
SETTINGS = ("CHAOS_DROP_RATE", "CHAOS_SEED")
WAIT = 60  # seconds a reply may take on a busy machine before we give up


def node_env(**settings):
    """Return this process's environment without chaos settings, plus these."""
    env = {k: v for k, v in os.environ.items() if k not in SETTINGS}
    env.update(settings)
    return env


def node_command(*args):
    """Return the command that starts the node under this Python."""
    return [sys.executable, str(MAIN), *args]


def run_node(stdin, *args, env=None, timeout=120):
    """Run the node to the end of `stdin` (bytes or str) and return it done."""
    if isinstance(stdin, str):
        stdin = stdin.encode()
    return subprocess.run(
        node_command(*args), input=stdin, capture_output=True,
        env=node_env() if env is None else env, timeout=timeout)


def start_node(*args, env=None):
    """Start the node with pipes on all three streams, unbuffered."""
    return subprocess.Popen(
        node_command(*args), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, bufsize=0,
        env=node_env() if env is None else env)


def request(kind, msg_id=None, src="c1", dest="n1", **fields):
    """Return one request line, newline included, as a client would send it."""
    body = {"type": kind, **fields}
    if msg_id is not None:
        body["msg_id"] = msg_id
    return json.dumps({"src": src, "dest": dest, "body": body}) + "\n"


def read_lines(stream, count):
    """Read `count` whole lines from a pipe, failing if they never come."""
    data = b""
    deadline = time.monotonic() + WAIT
    while data.count(b"\n") < count:
        left = max(deadline - time.monotonic(), 0)
        ready, _, _ = select.select([stream], [], [], left)
        assert ready, f"got only {data!r}: the node waits for more input"
        chunk = os.read(stream.fileno(), 1 << 16)
        assert chunk, f"stdout ended after {data!r}"
        data += chunk
    return data.decode("ascii")
