"""Headless Chromium for the dashboard's browser tests and its bench: Debian's ``chromium``
(installed by ``python -m tests.prerequisites``) driven by Playwright, started
with the flags that keep it off the network (this machine has none but
loopback; without them Chromium keeps dialling Google's hosts)."""

from __future__ import annotations

import contextlib
import shutil
from typing import Iterator

CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--enable-precise-memory-info"]


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        raise RuntimeError("chromium is not installed: run python -m tests.prerequisites "
                           "(Debian: apt-get install chromium)")
    return path


@contextlib.contextmanager
def chromium() -> Iterator[object]:
    """A Playwright ``Browser`` on Debian's chromium."""
    from playwright.sync_api import sync_playwright
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path(), headless=True, args=CHROMIUM_FLAGS)
        try:
            yield browser
        finally:
            browser.close()
