"""The echo-workload driver: main.py keeps Maelstrom's rules, and the driver
catches a node that breaks them.

Run with `python3 -m pytest -q tests/test_driver.py`.
"""

import json
import random
import subprocess
import sys

import pytest

import echo_driver
from echo_driver import Rule
from support import node_command, node_env


CHAOS_RATE = 0.2
SEED = 42  # main.py's default seed, which the chaos runs leave alone

# A stand-in node that misbehaves in the way FAKE_MODE names, so that the
# driver's checks can be seen to fire. "honest" breaks nothing.
FAKE_NODE = """\
import json, math, os, sys

mode = os.environ["FAKE_MODE"]
for raw in sys.stdin.buffer:
    message = json.loads(raw)
    print(json.dumps(message), file=sys.stderr, flush=True)
    body = message["body"]
    envelope = {"src": message["dest"], "dest": message["src"]}
    reply = {"type": body["type"] + "_ok"}
    if body["type"] == "echo":
        reply["echo"] = body["echo"]
        if mode == "exit_early":
            sys.exit(3)
        elif mode == "error_reply":
            reply = {"type": "error", "code": 10, "text": "no echo here"}
        elif mode == "wrong_echo":
            reply["echo"] = [body["echo"]]
        elif mode == "nan":
            reply["echo"] = math.nan
        elif mode == "extra_key":
            reply["extra"] = True
        elif mode == "extra_envelope_key":
            envelope["id"] = 1
        elif mode == "unknown_dest":
            envelope["dest"] = "c99"
        elif mode == "stray_line":
            print("reply follows:", flush=True)
    elif mode == "silent_init":
        continue
    elif mode == "bad_init_ok":
        envelope["id"] = 1
    reply["in_reply_to"] = body["msg_id"]
    print(json.dumps({**envelope, "body": reply}), flush=True)
"""

# How the stand-in fails, and the rule the driver must name for it.
BAD_REPLIES = {
    "extra_key": Rule.ECHO_BODY,
    "wrong_echo": Rule.ECHO_VALUE,
    "error_reply": Rule.NOT_ECHO_OK,
}
BAD_LINES = {
    "stray_line": Rule.NOT_JSON,
    "nan": Rule.NOT_JSON,
    "extra_envelope_key": Rule.NOT_ENVELOPE,
    "unknown_dest": Rule.UNKNOWN_DEST,
}


@pytest.fixture
def fake_node(tmp_path):
    """Write the stand-in node, runnable as a program, and return its path."""
    path = tmp_path / "fake_node.py"
    path.write_text(f"#!{sys.executable}\n{FAKE_NODE}")
    path.chmod(0o755)
    return path


def run_fake(path, mode, requests=8, **options):
    """Drive one stand-in node, two clients, with short waits."""
    options.setdefault("timeout", 0.2)
    return echo_driver.run(
        [sys.executable, str(path)], nodes=1, clients_per_node=2,
        requests=requests, env=node_env(FAKE_MODE=mode), **options)


def predicted_losses(answered):
    """Count the drops of a node that answers this many echo requests."""
    # Each node has its own generator seeded 42. Each echo_ok draws one
    # random() and is dropped below the rate; init_ok, a control reply,
    # draws nothing.
    rng = random.Random(SEED)
    return sum(rng.random() < CHAOS_RATE for _ in range(answered))


def requests_per_node(nodes, clients_per_node, requests):
    """Split the requests as Maelstrom binds clients: client i to node i % N."""
    clients = nodes * clients_per_node
    counts = [0] * nodes
    for i in range(clients):
        counts[i % nodes] += requests // clients + (i < requests % clients)
    return counts


def test_clean_run_is_all_ok():
    """Without chaos every request is answered, no rule broken, none crashed."""
    result = echo_driver.run(node_command(), nodes=3, clients_per_node=2,
                             requests=300, timeout=1.0, env=node_env())

    assert result.breaches == [], result.summary()
    assert result.crashed == {}, result.summary()
    assert (result.ok, result.info, result.failed) == (300, 0, 0)
    assert result.availability == 1
    assert [t.requests for t in result.nodes.values()] == [100, 100, 100]
    assert result.discarded == 0
    assert result.valid


def test_chaos_run_loses_only_what_the_seed_predicts():
    """With chaos, replies are lost only as timeouts, as the seed predicts."""
    shape = dict(nodes=3, clients_per_node=4, requests=240)
    counts = requests_per_node(**shape)
    losses = [predicted_losses(n) for n in counts]
    runs = [echo_driver.run(
        node_command(), timeout=0.4, **shape,
        env=node_env(CHAOS_DROP_RATE=str(CHAOS_RATE))) for _ in range(2)]

    for result in runs:
        text = result.summary()
        assert result.valid, text
        assert result.late == 0, "a reply outlived its timeout:\n" + text
        assert result.failed == 0, text
        assert result.ok == sum(counts) - sum(losses), text
        assert result.info == sum(losses), text
        assert [(t.requests, t.ok, t.info) for t in result.nodes.values()] \
            == [(n, n - lost, lost) for n, lost in zip(counts, losses)], text
        assert 0 < result.availability < 1
    assert runs[0].ok == runs[1].ok
    for result in runs:
        dropped = sum(line.startswith("dropped echo_ok")
                      for log in result.logs.values() for line in log)
        assert dropped == sum(losses)


def test_honest_fake_passes(fake_node):
    """The stand-in node, behaving, keeps every rule: the checks are fair."""
    result = run_fake(fake_node, "honest")
    assert result.valid, result.summary()
    assert result.ok == 8


@pytest.mark.parametrize("mode", BAD_REPLIES)
def test_bad_reply_fails_its_operation(fake_node, mode):
    """A reply the checker refuses fails its operation and names the rule."""
    result = run_fake(fake_node, mode)
    assert result.rules_broken() == {BAD_REPLIES[mode]}, result.summary()
    assert (result.ok, result.failed) == (0, 8)
    assert not result.valid


@pytest.mark.parametrize("mode", BAD_LINES)
def test_bad_line_stops_the_reading(fake_node, mode):
    """After one bad stdout line, nothing more from that node is read."""
    result = run_fake(fake_node, mode)
    assert result.rules_broken() == {BAD_LINES[mode]}, result.summary()
    assert len(result.breaches) == 1
    assert (result.ok, result.info) == (0, 8)


def test_bad_init_ok_line_fails_the_run(fake_node):
    """A bad init_ok line is never read, so the whole run fails at init."""
    result = run_fake(fake_node, "bad_init_ok", init_wait=0.3)
    assert [b.rule for b in result.breaches] == \
        [Rule.NOT_ENVELOPE, Rule.NO_INIT_OK]


def test_node_that_exits_is_crashed(fake_node):
    """A node gone before teardown is reported, its requests timed out."""
    result = run_fake(fake_node, "exit_early", requests=4)
    assert list(result.crashed) == ["n0"]
    assert "exit status 3" in result.crashed["n0"]
    assert (result.ok, result.info) == (0, 4)
    assert not result.valid


def test_silent_init_fails_the_run(fake_node):
    """No init_ok within the wait ends the run before any echo is sent."""
    result = run_fake(fake_node, "silent_init", init_wait=0.3)
    assert result.rules_broken() == {Rule.NO_INIT_OK}
    assert result.ok + result.info + result.failed == 0
    assert result.availability is None


def test_deliveries_are_numbered_and_clients_reuse_msg_ids(fake_node):
    """Deliveries carry rising integer ids, and each client counts from 1."""
    result = run_fake(fake_node, "honest", requests=6)
    received = [json.loads(line) for line in result.logs["n0"]]
    ids = [message["id"] for message in received]
    assert all(type(i) is int for i in ids) and ids == sorted(set(ids))
    first = received[0]
    assert (first["src"], first["body"]["type"]) == ("c0", "init")
    assert first["body"]["node_ids"] == ["n0"]
    by_client = {}
    for message in received[1:]:
        by_client.setdefault(message["src"], []).append(
            message["body"]["msg_id"])
    assert by_client == {"c1": [1, 2, 3], "c2": [1, 2, 3]}


def run_cli(*args):
    """Run the driver as a program and return the finished process."""
    return subprocess.run(
        [sys.executable, echo_driver.__file__, *args], capture_output=True,
        text=True, env=node_env(), timeout=120)


def test_command_line_clean_run_exits_0():
    """From the shell, a clean run of main.py prints a summary and exits 0."""
    done = run_cli("--nodes", "2", "--requests", "40", "--timeout", "1")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ok:            40" in done.stdout
    assert "valid:         yes" in done.stdout


def test_command_line_reports_the_offending_line(fake_node, tmp_path):
    """From the shell, a broken rule is named with its line, and exit is 1."""
    logs = tmp_path / "logs"
    done = run_cli("--bin", str(fake_node), "--nodes", "1", "--requests",
                   "3", "--timeout", "0.2", "--env", "FAKE_MODE=extra_key",
                   "--log-dir", str(logs))
    assert done.returncode == 1, done.stdout + done.stderr
    assert Rule.ECHO_BODY in done.stdout
    assert '"extra": true' in done.stdout
    assert (logs / "n0.log").read_text().count("\n") == 4
