"""A join token as a QR code in the terminal (segno: pure Python, no
dependencies), for a phone or a camera on the new box to read."""

from __future__ import annotations

import io

import segno


def terminal_qr(text: str) -> str:
    """``text`` as a QR code of half-block characters (two modules a line), quiet zone included."""
    out = io.StringIO()
    segno.make(text, error="l", micro=False).terminal(out=out, compact=True, border=2)
    return out.getvalue()
