"""Golden cases: each tests/golden/NAME.in.jsonl gives NAME.out.jsonl exactly.

An optional NAME.cmd holds the command line of the case, such as
`CHAOS_SEED=7 ./main.py --drop-rate 0.5`. Run `pytest --update-golden` to
rewrite the expected files after a deliberate change, then read the diff.
"""

import difflib
import shlex
from pathlib import Path

import pytest

from support import ROOT, node_env, run_node


GOLDEN = Path(__file__).resolve().parent / "golden"
SAMPLES = ROOT.parent / "shared" / "cases"
CASES = sorted(p.name[:-len(".in.jsonl")] for p in GOLDEN.glob("*.in.jsonl"))


def case_command(path):
    """Split a .cmd file into the environment settings and the arguments."""
    words = shlex.split(path.read_text())
    program = words.index("./main.py")
    settings = dict(word.split("=", 1) for word in words[:program])
    return settings, words[program + 1:]


def run_case(folder, name):
    """Run one case's input through the node; return (stdout, stderr)."""
    settings, args = {}, []
    cmd = folder / f"{name}.cmd"
    if cmd.exists():
        settings, args = case_command(cmd)
    done = run_node((folder / f"{name}.in.jsonl").read_bytes(), *args,
                    env=node_env(**settings))
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout, done.stderr.decode()


def assert_same(expected, actual, name):
    """Fail with a line diff when the two stdouts differ by even a byte."""
    if expected == actual:
        return
    diff = difflib.unified_diff(
        expected.decode().splitlines(keepends=True),
        actual.decode().splitlines(keepends=True),
        f"{name}.out.jsonl (expected)", f"{name} (actual stdout)")
    pytest.fail("stdout differs from the golden file:\n" + "".join(diff)
                + f"\n(byte-exact: {expected!r:.200} vs {actual!r:.200})",
                pytrace=False)


@pytest.mark.parametrize("name", CASES)
def test_golden(name, request):
    """The node's stdout for the case is byte for byte the expected file."""
    actual, stderr = run_case(GOLDEN, name)
    expected_path = GOLDEN / f"{name}.out.jsonl"
    if request.config.getoption("--update-golden"):
        expected_path.write_bytes(actual)
    if not expected_path.exists():
        pytest.fail(f"{expected_path.name} is missing; run pytest "
                    "--update-golden, then read every line it wrote")
    assert_same(expected_path.read_bytes(), actual, name)
    assert "Traceback" not in stderr


@pytest.mark.skipif(not SAMPLES.is_dir(), reason="no ../shared/cases here")
@pytest.mark.parametrize("name", sorted(
    p.name[:-len(".in.jsonl")] for p in SAMPLES.glob("*.in.jsonl")))
def test_contract_sample(name):
    """The contract's own sample cases give their expected stdout exactly."""
    actual, _ = run_case(SAMPLES, name)
    assert_same((SAMPLES / f"{name}.out.jsonl").read_bytes(), actual, name)
