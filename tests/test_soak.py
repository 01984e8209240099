"""A long soak: one million messages through one node process, chaos on.

Every chaos_stats reply must agree with what was written and dropped before
it, every drop must be the one the seed dictates, and the node's peak memory
must be what it is for ten thousand messages. Show the figures with -s:

    python3 -m pytest -q -s tests/test_soak.py
"""

import random
import re
import subprocess
import sys
import time

from support import node_command, node_env


MESSAGES = 1_000_000
SHORT_RUN = 10_000
STATS_EVERY = 10_000  # the last message of each ten thousand is chaos_stats
DROP_RATE = "0.1"
SEED = 42  # the node's default, which the run leaves in place
SLACK_KIB = 4 * 1024  # how far the long run's peak may exceed the short one

# Runs the node with files for its streams and prints its exit status and
# peak resident set size. A fresh wrapper has no other children, so the
# RUSAGE_CHILDREN figure is the node's alone.
WRAPPER = """
import resource, subprocess, sys
source, out, err, *command = sys.argv[1:]
with open(source, "rb") as i, open(out, "wb") as o, open(err, "wb") as e:
    status = subprocess.run(command, stdin=i, stdout=o, stderr=e).returncode
print(status, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""

INIT = ('{"src": "c0", "dest": "n1", "body": {"type": "init", '
        '"node_id": "n1", "node_ids": ["n1", "n2"], "msg_id": 0}}\n')
ECHO = ('{"src": "c%d", "dest": "n1", "body": '
        '{"type": "echo", "echo": "soak %d", "msg_id": %d}}\n')
STATS = ('{"src": "c%d", "dest": "n1", "body": '
         '{"type": "chaos_stats", "msg_id": %d}}\n')
INIT_OK = ('{"src": "n1", "dest": "c0", "body": '
           '{"type": "init_ok", "in_reply_to": 0, "msg_id": 0}}\n')
ECHO_OK = ('{"src": "n1", "dest": "c%d", "body": {"type": "echo_ok", '
           '"echo": "soak %d", "in_reply_to": %d, "msg_id": %d}}\n')
STATS_OK = ('{"src": "n1", "dest": "c%d", "body": {"type": "chaos_stats_ok", '
            '"enabled": true, "drop_rate": 0.1, "total_sent": %d, '
            '"total_dropped": %d, "in_reply_to": %d, "msg_id": %d}}\n')


def kind(i):
    """Say what message `i` of a run is: init, chaos_stats or echo."""
    if i == 0:
        return "init"
    return "stats" if i % STATS_EVERY == STATS_EVERY - 1 else "echo"


def request_line(i):
    """Return input line `i`; its msg_id is `i` and so is its reply's."""
    if kind(i) == "init":
        return INIT
    if kind(i) == "stats":
        return STATS % (i % 5, i)
    return ECHO % (i % 5, i, i)


def write_input(path, count):
    """Write `count` request lines to `path`, a block at a time."""
    with open(path, "w") as source:
        for start in range(0, count, STATS_EVERY):
            block = range(start, min(start + STATS_EVERY, count))
            source.write("".join(map(request_line, block)))


def run_wrapped(source, out, err):
    """Run the node on the files; return (status, peak RSS in KiB, seconds)."""
    command = [sys.executable, "-c", WRAPPER, str(source), str(out),
               str(err), *node_command("--drop-rate", DROP_RATE)]
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True,
                          env=node_env(), timeout=900)
    took = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    status, peak = map(int, done.stdout.split())
    return status, peak, took


def drop_lines(log, others):
    """Yield the drop lines of a log, putting its other lines in `others`."""
    for line in log:
        if line.startswith(b"dropped "):
            yield line
        else:
            others.append(line)


def check_outputs(out_path, err_path, count):
    """Walk stdout and the stderr drops in msg_id order against the seed.

    Returns (written, dropped). Each chaos_stats reply must report exactly
    the lines written to stdout and the drops logged before it.
    """
    rng = random.Random(SEED)
    written = dropped = 0
    others = []  # stderr lines that are not drops: only the summary
    with open(out_path, "rb") as out, open(err_path, "rb") as err:
        drops = drop_lines(err, others)
        for i in range(count):
            if kind(i) == "echo" and rng.random() < float(DROP_RATE):
                drop = next(drops, b"(none)")
                assert drop.startswith(b"dropped echo_ok"), (i, drop)
                assert drop.endswith(b"(msg_id %d)\n" % i), (i, drop)
                dropped += 1
                continue
            if kind(i) == "init":
                expected = INIT_OK
            elif kind(i) == "stats":
                expected = STATS_OK % (i % 5, written, dropped, i, i)
            else:
                expected = ECHO_OK % (i % 5, i, i, i)
            reply = out.readline()
            assert reply == expected.encode(), (i, reply[:300])
            written += 1
        assert out.read(100) == b"", "stdout holds more than the replies"
        assert next(drops, None) is None, "stderr names more drops"
    log = b"".join(others).decode()
    assert "Traceback" not in log, log
    assert len(others) == 1, log  # the exit summary alone
    assert re.search(rf"\b{written} sent\b", log), log
    assert re.search(rf"\b{dropped} dropped\b", log), log
    return written, dropped


def soak(tmp_path, count):
    """Run `count` messages through one node; return the run's figures."""
    source = tmp_path / f"in-{count}.jsonl"
    out, err = tmp_path / f"out-{count}.jsonl", tmp_path / f"err-{count}.log"
    write_input(source, count)
    status, peak, took = run_wrapped(source, out, err)
    assert status == 0, err.read_text()[-2000:]

    written, dropped = check_outputs(out, err, count)
    for path in (source, out, err):
        path.unlink()  # a million lines each way: do not keep them around
    print(f"\n{count:>9,} messages: {written:,} written, {dropped:,} dropped,"
          f" peak RSS {peak:,} KiB, {took:.1f} s ({count / took:,.0f}/s)")
    return peak


def test_million_messages_in_the_memory_of_ten_thousand(tmp_path):
    """Counters hold for a million messages, and memory does not grow."""
    short_peak = soak(tmp_path, SHORT_RUN)
    long_peak = soak(tmp_path, MESSAGES)
    print(f"peak RSS grew by {long_peak - short_peak:,} KiB "
          f"(allowed {SLACK_KIB:,} KiB)")
    assert long_peak - short_peak <= SLACK_KIB, (short_peak, long_peak)
