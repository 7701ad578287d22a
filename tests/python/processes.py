"""Starting our binary from the Python tests: where it is, and the addresses it prints."""

import os
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = os.environ.get("CHAOSEATER_BIN", str(ROOT / "target" / "release" / "chaoseater"))


def address(process, marker):
    """Reads stdout up to the line with `marker` and returns the http:// addresses on it."""
    while True:
        line = process.stdout.readline()
        assert line, f"process exited before printing {marker!r}"
        if marker in line:
            return [w[len("http://"):].rstrip(")") for w in line.split() if w.startswith("http://")]
