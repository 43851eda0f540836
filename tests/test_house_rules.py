"""House rules the tests keep themselves: a test awaits events; where it
sleeps, it says why on that line (an absence cannot be awaited, the load is
paced, a child stays up, ...); the code passes the house's lint (``ruff``,
configured in pyproject.toml: pyflakes, pycodestyle, import order)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent


def test_every_sleep_in_the_tests_says_why():
    bare = []
    for path in sorted(TESTS.glob("*.py")):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if re.search(r"\btime\.sleep\(", code) and "#" not in line and path.name != Path(__file__).name:
                bare.append(f"{path.name}:{n}: {line.strip()}")
    assert not bare, "await the event, or say why not on the line:\n" + "\n".join(bare)


@pytest.mark.timeout(120)
def test_the_code_passes_the_house_lint():
    # ``python -m ruff``: the ruff of this interpreter's environment, which the test extras install.
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise", "."],
                          cwd=TESTS.parent,
                          capture_output=True, text=True, timeout=110)
    assert "No module named ruff" not in done.stderr, "install the test extras: pip install -e '.[test]'"
    assert done.returncode == 0, "`ruff check .` (then `ruff check . --fix` for order and blanks):\n" + done.stdout
