"""The opt-in switch that rewrites golden files."""


def pytest_addoption(parser):
    """Add --update-golden, which writes each case's actual stdout."""
    parser.addoption(
        "--update-golden", action="store_true",
        help="rewrite tests/golden/*.out.jsonl from the node's actual stdout; "
             "read the diff before committing")
