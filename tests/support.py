"""Helpers the tests share: run main.py as a process, build request lines."""

import json
import os
import subprocess
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
MAIN = ROOT / "main.py"
SETTINGS = ("CHAOS_DROP_RATE", "CHAOS_SEED")


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
