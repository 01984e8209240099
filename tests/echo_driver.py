#!/usr/bin/env python3
"""Play Maelstrom's part in its echo workload, when Maelstrom is not at hand.

The driver starts each node as a process, has client c0 send it `init`, then
lets a few clients per node send `echo` requests one at a time. It checks
every line the nodes print by the rules Maelstrom holds them to, and ends
with a summary: ok, info (timed out) and failed operations, availability,
crashed nodes, and each rule broken with the line that broke it.

    python3 tests/echo_driver.py --nodes 3 --clients-per-node 2 --requests 300
    python3 tests/echo_driver.py --timeout 0.5 --env CHAOS_DROP_RATE=0.2

It exits 0 when no rule was broken and every node was alive at teardown,
1 otherwise. Tests import it and call `run()`.
"""

import argparse
import collections
import dataclasses
import enum
import itertools
import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path


DEFAULT_BIN = Path(__file__).resolve().parent.parent / "main.py"
DEFAULT_TIMEOUT = 5.0  # Maelstrom's wait for a reply before it gives up
DEFAULT_INIT_WAIT = 10.0  # Maelstrom's wait for each init_ok
STOP_WAIT = 5.0  # how long a node gets to exit once its stdin is closed
INIT_CLIENT = "c0"
SHOWN_CHARS = 160  # how much of an offending line the summary quotes
SHOWN_PER_RULE = 5  # more than this many breaches of a rule are counted
ECHO_KEYS = frozenset(("type", "echo", "in_reply_to"))
ECHO_OPTIONAL = frozenset(("msg_id",))


class Rule(enum.StrEnum):
    """The rules a node can break, each worded as the summary prints it."""

    NO_INIT_OK = "no init_ok within the init wait"
    NOT_JSON = "stdout line is not strict JSON"
    NOT_ENVELOPE = "stdout line is not exactly src, dest and body"
    UNKNOWN_DEST = "dest is not a live client"
    NOT_ECHO_OK = "reply to echo is not echo_ok"
    ECHO_BODY = "echo_ok body keys are not type, echo, in_reply_to[, msg_id]"
    ECHO_VALUE = "echo_ok gives back a different value"


@dataclasses.dataclass
class Breach:
    """One rule broken: by which node, how, and the line that did it."""

    rule: Rule
    node: str
    detail: str
    line: str


@dataclasses.dataclass
class Tally:
    """The operations one node was asked for and how they ended."""

    requests: int = 0
    ok: int = 0
    info: int = 0
    failed: int = 0


@dataclasses.dataclass
class Result:
    """Everything a run found, and the summary that reports it."""

    nodes: dict  # node id -> Tally
    breaches: list
    crashed: dict  # node id -> how it ended
    logs: dict  # node id -> its stderr lines
    late: int = 0  # replies that came after their request timed out
    discarded: int = 0  # replies no client was waiting for, late ones too
    settings: str = ""

    @property
    def ok(self):
        """Count the operations that got a good echo_ok in time."""
        return sum(t.ok for t in self.nodes.values())

    @property
    def info(self):
        """Count the operations that timed out, outcome unknown."""
        return sum(t.info for t in self.nodes.values())

    @property
    def failed(self):
        """Count the operations whose reply broke a rule."""
        return sum(t.failed for t in self.nodes.values())

    @property
    def availability(self):
        """Return the share of operations that were ok, or None if none ran."""
        total = self.ok + self.info + self.failed
        return self.ok / total if total else None

    @property
    def valid(self):
        """Tell whether every node kept every rule and none crashed."""
        return not self.breaches and not self.crashed

    def rules_broken(self):
        """Return the set of rules that were broken at least once."""
        return {breach.rule for breach in self.breaches}

    def summary(self):
        """Return the report printed at the end of a run, as text."""
        lines = [f"echo workload: {self.settings}"]
        for node_id, t in self.nodes.items():
            lines.append(f"  {node_id}: {t.requests} requests, {t.ok} ok, "
                         f"{t.info} info, {t.failed} failed")
        share = self.availability
        total = self.ok + self.info + self.failed
        lines += [
            f"ok:            {self.ok}",
            f"info:          {self.info} (timed out; {self.late} of them "
            f"answered late, {self.discarded} replies thrown away)",
            f"failed:        {self.failed}",
            "availability:  " + ("none (no operations ran)" if share is None
                                 else f"{share:.4f} ({self.ok}/{total} ok)"),
            "nodes crashed: " + (", ".join(
                f"{n} ({how})" for n, how in self.crashed.items()) or "none"),
            "rules broken:  " + ("none" if not self.breaches
                                 else f"{len(self.breaches)}"),
        ]
        lines += self.breach_lines()
        lines.append(f"valid:         {'yes' if self.valid else 'no'}")
        return "\n".join(lines)

    def breach_lines(self):
        """List each broken rule with its first few offending lines."""
        lines = []
        grouped = collections.defaultdict(list)
        for breach in self.breaches:
            grouped[breach.rule].append(breach)
        for rule, breaches in grouped.items():
            lines.append(f"  {rule} ({len(breaches)}x)")
            for breach in breaches[:SHOWN_PER_RULE]:
                lines.append(f"    {breach.node}: {breach.detail}")
                lines.append(f"      line: {breach.line}")
            if len(breaches) > SHOWN_PER_RULE:
                lines.append(f"    ... {len(breaches) - SHOWN_PER_RULE} more")
        return lines


def shown(raw):
    """Quote a line of bytes or text for the summary, cut to a sane width."""
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "backslashreplace")
    raw = raw.rstrip("\r\n")
    if len(raw) > SHOWN_CHARS:
        return raw[:SHOWN_CHARS] + "..."
    return raw


def refuse_constant(name):
    """Refuse NaN and Infinity, which Python's json takes but JSON lacks."""
    raise ValueError(f"{name} is not JSON")


def parse_strict(raw):
    """Decode one stdout line as strict JSON, or raise ValueError."""
    return json.loads(raw.decode("utf-8"), parse_constant=refuse_constant)


def envelope_problem(message, clients):
    """Return (rule, detail) if a parsed line is no message to a client."""
    if type(message) is not dict:
        return Rule.NOT_ENVELOPE, f"a JSON {type(message).__name__}"
    if message.keys() != {"src", "dest", "body"}:
        return Rule.NOT_ENVELOPE, f"keys {sorted(message)}"
    for key in ("src", "dest"):
        if type(message[key]) is not str:
            return Rule.NOT_ENVELOPE, f"{key} is not a string"
    if type(message["body"]) is not dict:
        return Rule.NOT_ENVELOPE, "body is not an object"
    if message["dest"] not in clients:
        return Rule.UNKNOWN_DEST, f"dest {message['dest']!r}"
    return None


def same_value(a, b):
    """Compare two JSON values exactly: 1, 1.0 and true all differ."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def reply_problem(body, sent):
    """Return (rule, detail) if a reply body is not the echo_ok it must be."""
    if body.get("type") != "echo_ok":
        return Rule.NOT_ECHO_OK, shown(json.dumps(body))
    keys = set(body)
    if not ECHO_KEYS <= keys <= ECHO_KEYS | ECHO_OPTIONAL:
        return Rule.ECHO_BODY, f"keys {sorted(keys)}"
    if not same_value(body["echo"], sent):
        return Rule.ECHO_VALUE, shown(
            f"sent {json.dumps(sent)}, got {json.dumps(body['echo'])}")
    return None


def echo_value(seq):
    """Return the value the seq-th request asks to have echoed."""
    kind = seq % 6
    if kind == 0:
        return f"Please echo {seq}"
    if kind == 1:
        return f"Bitte echo {seq}: naïve café, 日本語, ☃"
    if kind == 2:
        return f"astral {seq}: 🦀 𝄞"  # needs a surrogate pair once escaped
    if kind == 3:
        return {"seq": seq, "list": [1, -2, 3.5, None, True, False],
                "nested": {"empty": {}, "deep": [[["x"]]]}}
    if kind == 4:
        return [seq, "tab\there, \"quotes\", back\\slash", ""]
    return seq * 1_000_003 - 2**40


def plan(nodes, clients_per_node, requests):
    """Return (client, node index, request count), clients bound round-robin."""
    # Client cI (I from 1) is bound to node (I - 1) % nodes and the first
    # clients take one request more, so each node's share of the requests
    # follows from the arguments alone, never from timing.
    count = nodes * clients_per_node
    share, rest = divmod(requests, count)
    return [(f"c{i + 1}", i % nodes, share + (i < rest)) for i in range(count)]


class Client:
    """A Maelstrom client: its own msg_id counter and one request in flight."""

    def __init__(self, name):
        """Make a client named `name` with nothing sent yet."""
        self.name = name
        self.inbox = queue.Queue()  # (raw line, message) routed to it
        self.next_msg_id = 1
        self.expired = set()  # msg_ids it gave up on, to spot late replies
        self.late = 0
        self.discarded = 0

    def throw_away(self, message):
        """Drop a reply nobody waits for, noting one that came too late."""
        self.discarded += 1
        if message["body"].get("in_reply_to") in self.expired:
            self.late += 1

    def drain(self):
        """Throw away whatever is left in the inbox at the end of a run."""
        while True:
            try:
                self.throw_away(self.inbox.get_nowait()[1])
            except queue.Empty:
                return


class NodeProcess:
    """One node under test: its process, its stdin, its two reader threads."""

    def __init__(self, node_id, command, env, network):
        """Start the node's process and the threads that read its output."""
        self.node_id = node_id
        self.network = network
        self.proc = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, env=env)
        self.stdin_lock = threading.Lock()
        self.log = []  # the node's stderr, line by line
        self.deaf = False  # set at the first bad line; later ones are unread
        self.readers = [
            threading.Thread(target=self.read_stdout, daemon=True),
            threading.Thread(target=self.read_stderr, daemon=True),
        ]
        for reader in self.readers:
            reader.start()

    def read_stdout(self):
        """Check each stdout line and route it, until the first bad one."""
        for raw in self.proc.stdout:
            # Past a bad line Maelstrom reads no more; the pipe is still
            # drained so that the node never blocks on a full one.
            if not self.deaf:
                self.network.receive(self, raw)

    def read_stderr(self):
        """Keep the node's stderr as its log."""
        for raw in self.proc.stderr:
            self.log.append(raw.decode("utf-8", "replace").rstrip("\r\n"))

    def write(self, line):
        """Write one line to stdin, the caller holding `stdin_lock`."""
        try:
            self.proc.stdin.write(line)
            self.proc.stdin.flush()
        except (OSError, ValueError):
            pass  # the node is gone, so the request will time out

    def stop(self):
        """Close stdin, give the node a moment to exit, then kill it."""
        with self.stdin_lock:
            try:
                self.proc.stdin.close()
            except OSError:
                pass  # its reader died; closing only flushed into nothing
        try:
            self.proc.wait(STOP_WAIT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for reader in self.readers:
            reader.join(STOP_WAIT)


class Network:
    """Maelstrom's side of the pipes: number, deliver, check and route."""

    def __init__(self, client_names):
        """Make the clients that may send and receive in this run."""
        self.clients = {name: Client(name) for name in client_names}
        self.ids = itertools.count()  # the top-level id of each delivery
        self.breaches = []
        self.breach_lock = threading.Lock()

    def breach(self, rule, node_id, detail, line):
        """Record one broken rule; any thread may call this."""
        with self.breach_lock:
            self.breaches.append(Breach(rule, node_id, detail, shown(line)))

    def receive(self, node, raw):
        """Check one stdout line of a node; route it to its client if good."""
        try:
            message = parse_strict(raw)
        except (ValueError, RecursionError) as error:
            # Too deep for Python's parser is too deep to check, so it
            # counts against the node as a line that cannot be read.
            node.deaf = True
            return self.breach(Rule.NOT_JSON, node.node_id, str(error), raw)
        problem = envelope_problem(message, self.clients)
        if problem:
            node.deaf = True
            rule, detail = problem
            return self.breach(rule, node.node_id, detail, raw)
        self.clients[message["dest"]].inbox.put((raw, message))

    def call(self, client, node, body, wait):
        """Send one request from a client; return (line, reply) or None."""
        msg_id = client.next_msg_id
        client.next_msg_id += 1
        with node.stdin_lock:
            # Taken under the node's lock, the ids rise in the order the
            # node reads its lines.
            message = {"id": next(self.ids), "src": client.name,
                       "dest": node.node_id,
                       "body": {**body, "msg_id": msg_id}}
            line = json.dumps(message, ensure_ascii=False) + "\n"
            node.write(line.encode())
        deadline = time.monotonic() + wait
        while (left := deadline - time.monotonic()) > 0:
            try:
                raw, reply = client.inbox.get(timeout=left)
            except queue.Empty:
                break
            reply_to = reply["body"].get("in_reply_to")
            if type(reply_to) is int and reply_to == msg_id:
                return raw, reply
            client.throw_away(reply)
        client.expired.add(msg_id)
        return None


def run_client(network, client, node, count, first_seq, timeout, tally):
    """Send a client's requests one by one and tally how each one ended."""
    for seq in range(first_seq, first_seq + count):
        value = echo_value(seq)
        got = network.call(client, node, {"type": "echo", "echo": value},
                           timeout)
        if got is None:
            tally["info"] += 1
            continue
        raw, reply = got
        problem = reply_problem(reply["body"], value)
        if problem:
            tally["failed"] += 1
            network.breach(problem[0], node.node_id, problem[1], raw)
        else:
            tally["ok"] += 1


def init_nodes(network, nodes, wait):
    """Have c0 init each node in turn; stop at the first without init_ok."""
    client = network.clients[INIT_CLIENT]
    node_ids = [node.node_id for node in nodes]
    for node in nodes:
        body = {"type": "init", "node_id": node.node_id, "node_ids": node_ids}
        got = network.call(client, node, body, wait)
        if got is None:
            network.breach(Rule.NO_INIT_OK, node.node_id,
                           f"no reply in {wait:g} s", json.dumps(body))
            return False
        raw, reply = got
        if reply["body"].get("type") != "init_ok":
            network.breach(Rule.NO_INIT_OK, node.node_id,
                           "the reply is not init_ok", raw)
            return False
    return True


def run(command=(str(DEFAULT_BIN),), nodes=3, clients_per_node=2,
        requests=300, timeout=DEFAULT_TIMEOUT, init_wait=DEFAULT_INIT_WAIT,
        env=None, log_dir=None):
    """Run the echo workload against `nodes` copies of `command`."""
    bound = plan(nodes, clients_per_node, requests)
    network = Network([INIT_CLIENT] + [name for name, _, _ in bound])
    node_ids = [f"n{k}" for k in range(nodes)]
    tallies = {node_id: Tally() for node_id in node_ids}
    crashed = {}
    started = []
    try:
        for node_id in node_ids:
            started.append(NodeProcess(node_id, list(command),
                                       os.environ if env is None else env,
                                       network))

        if init_nodes(network, started, init_wait):
            workload(network, started, bound, timeout, tallies)

        for node in started:
            status = node.proc.poll()
            if status is not None:
                last = node.log[-1] if node.log else "no log"
                crashed[node.node_id] = f"exit status {status}; {last}"
    finally:
        for node in started:
            node.stop()

    result = Result(tallies, network.breaches, crashed,
                    {node.node_id: node.log for node in started},
                    settings=f"{nodes} nodes, {len(bound)} clients, "
                             f"{requests} requests, timeout {timeout:g} s")
    for client in network.clients.values():
        client.drain()
        result.late += client.late
        result.discarded += client.discarded
    if log_dir is not None:
        write_logs(Path(log_dir), result.logs)
    return result


def workload(network, nodes, bound, timeout, tallies):
    """Run every client at once, each in its own thread, and tally them."""
    threads = []
    counts = []
    first_seq = 0
    for name, index, count in bound:
        tally = collections.Counter()
        counts.append((nodes[index].node_id, count, tally))
        threads.append(threading.Thread(target=run_client, daemon=True, args=(
            network, network.clients[name], nodes[index], count, first_seq,
            timeout, tally)))
        first_seq += count
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    for node_id, count, tally in counts:
        t = tallies[node_id]
        t.requests += count
        t.ok += tally["ok"]
        t.info += tally["info"]
        t.failed += tally["failed"]


def write_logs(folder, logs):
    """Write each node's stderr to FOLDER/NODE.log, as Maelstrom keeps them."""
    folder.mkdir(parents=True, exist_ok=True)
    for node_id, lines in logs.items():
        text = "".join(line + "\n" for line in lines)
        (folder / f"{node_id}.log").write_text(text)


def setting(text):
    """Parse one --env NAME=VALUE argument into a pair."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, not {text!r}")
    return name, value


def positive(kind):
    """Return an argparse type that accepts only numbers above zero."""
    def parse(text):
        """Parse one number and refuse it unless it is above zero."""
        try:
            number = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"not a number: {text!r}") from None
        if not number > 0:
            raise argparse.ArgumentTypeError(f"must be above 0: {text!r}")
        return number
    return parse


def parse_args(argv):
    """Read the command line."""
    parser = argparse.ArgumentParser(
        description="Drive a node through Maelstrom's echo workload.")
    parser.add_argument("--bin", default=str(DEFAULT_BIN),
                        help="the node program, run as is (default: main.py)")
    parser.add_argument("--nodes", type=positive(int), default=3,
                        help="how many nodes to start (default 3)")
    parser.add_argument("--clients-per-node", type=positive(int), default=2,
                        help="clients bound to each node (default 2)")
    parser.add_argument("--requests", type=positive(int), default=300,
                        help="echo requests in all (default 300)")
    parser.add_argument("--timeout", type=positive(float),
                        default=DEFAULT_TIMEOUT,
                        help="seconds a request waits for its reply (default "
                             f"{DEFAULT_TIMEOUT:g})")
    parser.add_argument("--init-wait", type=positive(float),
                        default=DEFAULT_INIT_WAIT,
                        help="seconds to wait for each init_ok (default "
                             f"{DEFAULT_INIT_WAIT:g})")
    parser.add_argument("--env", type=setting, action="append", default=[],
                        metavar="NAME=VALUE",
                        help="add to every node's environment (repeatable)")
    parser.add_argument("--log-dir", metavar="DIR",
                        help="write each node's stderr to DIR/NODE.log")
    return parser.parse_args(argv)


def main(argv=None):
    """Run the workload from the command line; return the exit status."""
    args = parse_args(argv)
    env = dict(os.environ)
    env.update(args.env)
    try:
        result = run([args.bin], args.nodes, args.clients_per_node,
                     args.requests, args.timeout, args.init_wait, env,
                     args.log_dir)
    except OSError as error:
        raise SystemExit(f"echo_driver: cannot start {args.bin}: {error}")
    except KeyboardInterrupt:
        return 130  # the nodes were stopped on the way out
    print(result.summary())
    return 0 if result.valid else 1


if __name__ == "__main__":
    sys.exit(main())
