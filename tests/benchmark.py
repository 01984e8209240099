#!/usr/bin/env python3
"""Measure main.py against a bare echo loop: throughput, latency, memory.

Not a test: pytest does not collect it. Run it from anywhere:

    python3 tests/benchmark.py            # 7 rounds, about a minute
    python3 tests/benchmark.py --quick    # 3 rounds, for a first look
    python3 tests/benchmark.py --main /tmp/old_main.py   # another version

The bare loop is the least a line-by-line stdlib echo node can do: read
stdin in chunks, json.loads each line, build the echo_ok dict, json.dumps
it, write each chunk's replies at once. It checks nothing, drops nothing
and logs nothing, so its speed is the floor the node is held to. The two
programs run in alternating rounds on the same input, and each goal is a
ratio from this one invocation, because other work on the machine moves
absolute figures more than it moves ratios. Peak memory comes from the
kernel's own account of each run (wait4's ru_maxrss).
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


MAIN = Path(__file__).resolve().parent.parent / "main.py"
CLIENTS = 8  # Maelstrom's echo workload runs a handful of clients
STREAM = 200_000  # echo requests in a throughput run
TRIPS = 3_000  # round trips per program in a latency round
SMALL, LARGE = 10_000, 1_000_000  # messages in the two memory runs
DROP_RATE = "0.1"

GOAL_RATE_OFF = 0.90  # node's share of the bare loop's msg/s, chaos off
GOAL_RATE_ON = 0.85  # the same with chaos on from start-up
GOAL_P50 = 1.2  # node's p50 latency over the bare loop's, at most
GOAL_P99 = 1.5
GOAL_GROWTH_MB = 4.0  # peak RSS at LARGE messages less that at SMALL

BARE_LOOP = r'''
import json
import os
import sys

READ_SIZE = 1 << 16  # what the node reads at a time


def main():
    """Echo every request on stdin; init gets init_ok."""
    out = sys.stdout.buffer
    tail = b""
    msg_id = 0
    while True:
        chunk = os.read(0, READ_SIZE)
        if not chunk:
            break
        data = tail + chunk
        cut = data.rfind(b"\n")
        if cut < 0:
            tail = data
            continue
        tail = data[cut + 1:]  # the stream ends with a newline: no last tail
        replies = []
        for line in data[:cut].decode().split("\n"):
            message = json.loads(line)
            body = message["body"]
            if body["type"] == "echo":
                reply = {"type": "echo_ok", "echo": body["echo"]}
            else:
                reply = {"type": "init_ok"}
            reply["in_reply_to"] = body["msg_id"]
            reply["msg_id"] = msg_id
            msg_id += 1
            replies.append(json.dumps(
                {"src": message["dest"], "dest": message["src"],
                 "body": reply}))
        out.write(("\n".join(replies) + "\n").encode())
        out.flush()


main()
'''

# Linux keeps a process's peak RSS across exec, counting the memory it had
# before, so a child spawned straight from this big harness would report the
# harness's size. A fresh, small interpreter spawns each batch run instead;
# its own peak, which it reports too, is the least a figure can be.
WRAPPER = r'''
import json
import os
import sys
import time

stdin, stdout, stderr, *argv = sys.argv[1:]
fds = [os.open(stdin, os.O_RDONLY),
       os.open(stdout, os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
       os.open(stderr, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)]
with open("/proc/self/status") as status:
    floor = next(int(line.split()[1]) for line in status
                 if line.startswith("VmHWM"))
start = time.perf_counter()
pid = os.posix_spawn(argv[0], argv, os.environ, file_actions=[
    (os.POSIX_SPAWN_DUP2, fd, n) for n, fd in enumerate(fds)])
_, status, usage = os.wait4(pid, 0)  # this child's own rusage
seconds = time.perf_counter() - start
if os.waitstatus_to_exitcode(status) != 0:
    sys.exit(f"exit status {os.waitstatus_to_exitcode(status)}")
print(json.dumps([seconds, usage.ru_maxrss, floor]))
'''


def log(line):
    """Report progress on stderr, leaving stdout to the results."""
    print(line, file=sys.stderr, flush=True)


def bare_command(folder):
    """Write the bare loop into `folder` and return the argv that runs it."""
    path = Path(folder) / "bare_loop.py"
    path.write_text(BARE_LOOP)
    return [sys.executable, str(path)]


def request(src, msg_id, body):
    """Return one request line as Maelstrom writes it: compact, with `id`."""
    body["msg_id"] = msg_id
    return json.dumps({"id": msg_id, "src": src, "dest": "n1", "body": body},
                      separators=(",", ":")) + "\n"


def write_stream(path, count):
    """Write init and then `count` echo requests from CLIENTS clients."""
    init = {"type": "init", "node_id": "n1", "node_ids": ["n1", "n2", "n3"]}
    lines = [request("c0", 0, init)]
    for i in range(count):
        body = {"type": "echo", "echo": f"Please echo {i % 997}"}
        lines.append(request(f"c{1 + i % CLIENTS}", i + 1, body))
        if len(lines) >= 100_000:
            with open(path, "a") as file:
                file.writelines(lines)
            lines.clear()
    with open(path, "a") as file:
        file.writelines(lines)


def env_without_settings():
    """Return this environment without the node's chaos variables."""
    return {k: v for k, v in os.environ.items()
            if k not in ("CHAOS_DROP_RATE", "CHAOS_SEED")}


def run_batch(argv, stdin_path, stdout_path, stderr_path):
    """Run `argv` on a file to its end; return (seconds, peak RSS in MB)."""
    done = subprocess.run(
        [sys.executable, "-S", "-I", "-c", WRAPPER, stdin_path, stdout_path,
         stderr_path, *argv],
        env=env_without_settings(), capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{argv} failed: {done.stderr.strip()}; "
                         f"see {stderr_path}")
    seconds, peak_kb, floor_kb = json.loads(done.stdout)
    if peak_kb <= floor_kb:
        raise SystemExit(f"{argv} peaked below the wrapper's own "
                         f"{floor_kb} KiB, which hides its figure")
    return seconds, peak_kb / 1024


def count_lines(path):
    """Return how many lines a file holds."""
    with open(path, "rb") as file:
        return sum(block.count(b"\n") for block in iter(
            lambda: file.read(1 << 20), b""))


def check_counts(name, stdout_path, stderr_path, chaos):
    """Stop unless a run wrote a reply for each request, less the drops."""
    replies = count_lines(stdout_path)
    logged = count_lines(stderr_path)
    expected = STREAM + 1
    if chaos:
        # Each drop is one log line; the exit summary is one more.
        ok = replies + logged - 1 == expected and logged > STREAM // 20
    else:
        ok = replies == expected
    if not ok:
        raise SystemExit(f"{name}: {replies} replies and {logged} log lines "
                         f"for {expected} requests")


def throughput(programs, stream, folder, rounds):
    """Time each program on `stream` in rotating order; return msg/s lists."""
    rates = {name: [] for name in programs}
    order = list(programs)
    for n in range(rounds):
        for name in order:
            out = os.path.join(folder, f"{name}.out")
            err = os.path.join(folder, f"{name}.err")
            seconds, _ = run_batch(programs[name], stream, out, err)
            check_counts(name, out, err, "chaos" in name)
            rates[name].append((STREAM + 1) / seconds)
        order.append(order.pop(0))  # no program always runs first
        log(f"throughput round {n + 1}/{rounds}: " + ", ".join(
            f"{name} {rates[name][-1]:,.0f}/s" for name in programs))
    return rates


class Live:
    """A program started with pipes, spoken to one line at a time."""

    def __init__(self, argv):
        """Start `argv` with its stdin and stdout on pipes to this process."""
        stdin_r, self.stdin = os.pipe()
        self.stdout, stdout_w = os.pipe()
        devnull = os.open(os.devnull, os.O_WRONLY)
        actions = [(os.POSIX_SPAWN_DUP2, stdin_r, 0),
                   (os.POSIX_SPAWN_DUP2, stdout_w, 1),
                   (os.POSIX_SPAWN_DUP2, devnull, 2),
                   (os.POSIX_SPAWN_CLOSE, self.stdin),
                   (os.POSIX_SPAWN_CLOSE, self.stdout)]
        self.pid = os.posix_spawn(argv[0], argv, env_without_settings(),
                                  file_actions=actions)
        for fd in (stdin_r, stdout_w, devnull):
            os.close(fd)

    def ask(self, line):
        """Send one line and return the nanoseconds until its reply."""
        start = time.perf_counter_ns()
        os.write(self.stdin, line)
        reply = os.read(self.stdout, 1 << 16)
        while not reply.endswith(b"\n"):
            more = os.read(self.stdout, 1 << 16)
            if not more:
                raise SystemExit(f"no reply to {line!r}")
            reply += more
        return time.perf_counter_ns() - start

    def close(self):
        """Close stdin and wait for the program to exit."""
        os.close(self.stdin)
        os.waitpid(self.pid, 0)
        os.close(self.stdout)


def percentile(samples, share):
    """Return the sample below which `share` of the sorted samples fall."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def latency(programs, rounds):
    """Time TRIPS round trips per program and round, interleaving them."""
    lines = [request(f"c{1 + i % CLIENTS}", i + 1,
                     {"type": "echo", "echo": f"Please echo {i}"}).encode()
             for i in range(TRIPS)]
    init = request("c0", 0, {"type": "init", "node_id": "n1",
                             "node_ids": ["n1"]}).encode()
    result = {name: {"p50": [], "p99": []} for name in programs}
    for n in range(rounds):
        lives = {name: Live(argv) for name, argv in programs.items()}
        samples = {name: [] for name in programs}
        for live in lives.values():
            live.ask(init)
        order = list(lives)
        for line in lines:
            # Taking turns, request by request, puts both programs under
            # the same bursts of load from the rest of the machine.
            for name in order:
                samples[name].append(lives[name].ask(line))
            order.reverse()
        for name, live in lives.items():
            live.close()
            result[name]["p50"].append(percentile(samples[name], 0.50))
            result[name]["p99"].append(percentile(samples[name], 0.99))
        log(f"latency round {n + 1}/{rounds}: " + ", ".join(
            f"{name} p50 {result[name]['p50'][-1] / 1000:.1f} us, "
            f"p99 {result[name]['p99'][-1] / 1000:.1f} us"
            for name in programs))
    return {name: {k: statistics.median(v) / 1000 for k, v in figures.items()}
            for name, figures in result.items()}


def memory(argv, stream, folder):
    """Return the peak RSS in MB of one run of `argv` on `stream`."""
    _, peak = run_batch(argv, stream, os.devnull,
                        os.path.join(folder, "memory.err"))
    return peak


def machine():
    """Describe the CPU, the cores and the interpreter in one line."""
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{model}, {os.cpu_count()} cores, Python "
            f"{platform.python_version()} on {platform.system()} "
            f"{platform.release()}")


def table(rates, lat, mem):
    """Return the table's lines and whether every goal was met."""
    rows = []
    med = {name: statistics.median(v) for name, v in rates.items()}
    for name, label, goal in (("node", "chaos off", GOAL_RATE_OFF),
                              ("node chaos", f"chaos {DROP_RATE}",
                               GOAL_RATE_ON)):
        ratio = med[name] / med["bare"]
        rows.append((f"throughput, {label} (msg/s)", f"{med[name]:,.0f}",
                     f"{med['bare']:,.0f}", f"{ratio:.2f}x",
                     f">= {goal:.2f}x", ratio >= goal))
    for key, goal in (("p50", GOAL_P50), ("p99", GOAL_P99)):
        node, bare = lat["node"][key], lat["bare"][key]
        rows.append((f"latency {key} (us)", f"{node:.1f}", f"{bare:.1f}",
                     f"{node / bare:.2f}x", f"<= {goal:.2f}x",
                     node / bare <= goal))
    for name, label in (("node", "chaos off"),
                        ("node chaos", f"chaos {DROP_RATE}")):
        small, large = mem[name]
        rows.append((f"peak RSS, {label}, 10k / 1M msgs (MB)",
                     f"{small:.1f} / {large:.1f}",
                     f"{mem['bare'][0]:.1f} / {mem['bare'][1]:.1f}",
                     f"{large - small:+.1f} MB", f"<= +{GOAL_GROWTH_MB:.0f} MB",
                     large - small <= GOAL_GROWTH_MB))
    cells = [("measure", "node", "bare loop", "check", "goal", "result")]
    cells += [(*row[:5], "PASS" if row[5] else "MISS") for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(6)]
    cells.insert(1, tuple("-" * width for width in widths))
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths))
             .rstrip() for line in cells]
    return lines, all(row[5] for row in rows)


def main():
    """Run every measurement, print the table; exit 1 if a goal is missed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="3 rounds of each kind instead of 7")
    parser.add_argument("--rounds", type=int, help="rounds of each kind")
    parser.add_argument("--main", type=Path, default=MAIN, metavar="PATH",
                        help="the node to measure, such as an older main.py "
                             "(default: this repository's)")
    args = parser.parse_args()
    rounds = args.rounds or (3 if args.quick else 7)
    node = [sys.executable, str(args.main.resolve())]
    chaos = [*node, "--drop-rate", DROP_RATE]

    with tempfile.TemporaryDirectory(prefix="node-bench-") as folder:
        bare = bare_command(folder)
        log("writing the input streams")
        streams = {}
        for count in (SMALL, STREAM, LARGE):
            streams[count] = os.path.join(folder, f"stream-{count}.jsonl")
            write_stream(streams[count], count)
        rates = throughput({"node": node, "node chaos": chaos, "bare": bare},
                           streams[STREAM], folder, rounds)
        lat = latency({"node": node, "bare": bare}, rounds)
        mem = {}
        for name, argv in (("node", node), ("node chaos", chaos),
                           ("bare", bare)):
            mem[name] = [memory(argv, streams[n], folder)
                         for n in (SMALL, LARGE)]
            log(f"memory of {name} done")

    lines, met = table(rates, lat, mem)
    print(f"machine: {machine()}")
    print(f"node: {args.main}")
    print(f"throughput: init + {STREAM:,} echo requests from {CLIENTS} "
          f"clients, median of {rounds} rounds")
    print(f"latency: {TRIPS:,} round trips a round, median of {rounds} "
          "rounds' percentiles")
    print("check: node / bare loop, or the node's growth from 10k to 1M")
    print()
    print("\n".join(lines))
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
