"""The node as a live process: what a golden file of stdout cannot show."""

import json
import os
import re
import signal
import subprocess

import pytest

from support import (
    MAIN, ROOT, node_env, read_lines, request, run_node, start_node)


INIT = request("init", 1, src="c0", node_id="n1", node_ids=["n1"])


def stop(node):
    """Close stdin and return (exit status, stderr) of a live node."""
    node.stdin.close()
    stderr = node.stderr.read().decode()
    return node.wait(timeout=10), stderr


def test_reply_arrives_while_stdin_stays_open():
    """A single request is answered at once, without waiting for more input."""
    node = start_node()
    node.stdin.write(INIT.encode())
    reply = json.loads(read_lines(node.stdout, 1))
    assert reply["body"] == {"type": "init_ok", "in_reply_to": 1, "msg_id": 0}
    node.stdin.write(request("echo", 2, echo="live").encode())
    reply = json.loads(read_lines(node.stdout, 1))
    assert reply["body"]["echo"] == "live"
    assert stop(node)[0] == 0


def test_reader_closing_stdout_exits_without_traceback():
    """When the reader goes away the node leaves quietly."""
    node = start_node()
    node.stdin.write(INIT.encode())
    read_lines(node.stdout, 1)
    node.stdout.close()
    node.stdin.write(request("echo", 2, echo="nobody reads this").encode())
    status, stderr = stop(node)
    assert status == 0
    assert "Traceback" not in stderr
    assert "stdout closed" in stderr


@pytest.mark.parametrize("signum, status", [
    (signal.SIGINT, 130),  # Ctrl-C
    (signal.SIGTERM, 143),  # what a harness sends at teardown
], ids=["ctrl-c", "sigterm"])
def test_signal_exits_cleanly_with_summary(signum, status):
    """A signal ends the node with 128 + its number, a summary, no traceback."""
    node = start_node()
    node.stdin.write(INIT.encode())
    read_lines(node.stdout, 1)  # the node is up and blocked reading
    node.send_signal(signum)
    assert node.wait(timeout=10) == status
    stderr = node.stderr.read().decode()
    node.stdin.close()
    assert "Traceback" not in stderr
    assert stderr == "exiting: 1 received (0 rejected), 1 sent, 0 dropped\n"


@pytest.mark.parametrize("args, settings", [
    (["--drop-rate", "1.5"], {}),
    (["--drop-rate", "nan"], {}),
    (["--drop-rate", "true"], {}),
    (["--drop-rate", "0_1"], {}),  # int() would read this as 1
    (["--drop-rate", "\u0661"], {}),  # an Arabic-Indic 1, also read by int()
    (["--drop-rate", " 0.5"], {}),
    (["--drop", "0.5"], {}),  # no abbreviated flags
    (["--seed", "4.2"], {}),
    (["--seed", "1_000"], {}),
    (["--bogus"], {}),
    ([], {"CHAOS_DROP_RATE": "-0.1"}),
    ([], {"CHAOS_DROP_RATE": "inf"}),
    ([], {"CHAOS_SEED": "forty-two"}),
    (["--drop-rate", "0.5"], {"CHAOS_SEED": "x"}),
])
def test_bad_startup_value_exits_2_with_one_line(args, settings):
    """A bad setting stops the node before it reads: one line, status 2."""
    done = run_node(INIT, *args, env=node_env(**settings))
    assert done.returncode == 2
    assert done.stdout == b""
    lines = done.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("main.py: "), lines


def test_every_drop_is_named_on_stderr():
    """Each dropped message gets one stderr line with type, dest and msg_id."""
    lines = [INIT] + [request("echo", i, echo=i) for i in range(2, 12)]
    done = run_node("".join(lines), "--drop-rate", "0.5")
    sent = {json.loads(line)["body"]["msg_id"]
            for line in done.stdout.decode().splitlines()}
    drops = re.findall(r'^dropped echo_ok to "c1" \(msg_id (\d+)\)$',
                       done.stderr.decode(), re.MULTILINE)
    dropped = {int(n) for n in drops}
    assert dropped and sent.isdisjoint(dropped)
    assert sent | dropped == set(range(11))
    assert len(drops) == len(dropped)


def test_stderr_names_rejected_and_unanswered_input():
    """A rejected line and a request with no msg_id each get a stderr line."""
    lines = [INIT, "\n \n", "not json\n", request("chaos_off"),
             request("echo_ok", 3)]
    done = run_node("".join(lines))
    log = done.stderr.decode().splitlines()
    # Line numbers are those of stdin, blank lines included.
    assert log[0].startswith("rejected input line 4: not JSON")
    assert log[1] == 'no reply to "chaos_off" from "c1": no integer msg_id'
    assert log[2] == 'ignored "echo_ok" from "c1": replies are not requests'
    assert log[3] == "exiting: 4 received (1 rejected), 1 sent, 0 dropped"
    assert len(log) == 4


def test_runs_as_an_executable_script():
    """`./main.py` starts through its shebang, as Maelstrom's --bin does."""
    assert os.access(MAIN, os.X_OK)
    done = subprocess.run(["./main.py"], cwd=ROOT, input=INIT.encode(),
                          capture_output=True, env=node_env(), timeout=60)
    assert done.returncode == 0
    assert json.loads(done.stdout)["body"]["type"] == "init_ok"


def test_readme_commands_are_the_ones_that_run():
    """The README's test command is the one CI runs, and its run command works."""
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci in readme
    run = re.search(r"^\./main\.py < (tests/golden/\S+\.in\.jsonl)$", readme,
                    re.MULTILINE)
    assert run, "README has no `./main.py < tests/golden/...` command"
    session = ROOT / run.group(1)
    expected = session.with_name(session.name.replace(".in.", ".out."))
    done = run_node(session.read_bytes())
    assert done.stdout == expected.read_bytes()


@pytest.mark.parametrize("text, rate", [
    ("1", 1), ("0", 0), ("0.25", 0.25), (".5", 0.5), ("1e-1", 0.1),
    ("1.0", 1.0)])
def test_startup_rate_is_read_as_a_number(text, rate):
    """A start-up rate keeps its kind: `1` is reported as 1, `1.0` as 1.0."""
    done = run_node(request("chaos_stats", 1), "--drop-rate", text)
    body = json.loads(done.stdout)["body"]
    assert body["enabled"] is True
    assert body["drop_rate"] == rate
    assert type(body["drop_rate"]) is type(rate)
