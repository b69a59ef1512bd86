"""How the benchmark's docs write a figure or a table cell: seconds, bytes, one line of
text. Shared by the targets' details and the report's tables, so a figure reads the same
in both."""

from __future__ import annotations

from typing import Optional


def ms(seconds: Optional[float]) -> str:
    """'12.3 ms' below a second, '1.23 s' from one on; '-' for None."""
    if seconds is None:
        return "-"
    return f"{seconds * 1e3:.1f} ms" if seconds < 1.0 else f"{seconds:.2f} s"


def gb(num_bytes: Optional[float]) -> str:
    """'1.23 GB' (10^9 bytes); '-' for None."""
    return "-" if num_bytes is None else f"{num_bytes / 1e9:.2f} GB"


def one_line(text: str, limit: int = 200) -> str:
    """``text`` on one line (a table cell), cut to ``limit`` characters."""
    text = " ".join(str(text).split()).replace("|", "/")
    return text if len(text) <= limit else text[: limit - 3] + "..."
