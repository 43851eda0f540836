"""House rules the tests keep themselves: a test awaits events; where it
sleeps, it says why on that line (an absence cannot be awaited, the load is
paced, a child stays up, ...)."""

from __future__ import annotations

import re
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def test_every_sleep_in_the_tests_says_why():
    bare = []
    for path in sorted(TESTS.glob("*.py")):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if re.search(r"\btime\.sleep\(", code) and "#" not in line and path.name != Path(__file__).name:
                bare.append(f"{path.name}:{n}: {line.strip()}")
    assert not bare, "await the event, or say why not on the line:\n" + "\n".join(bare)
