"""The README's node section covers the node's interface: every parameter with its default
and when it can change, every published topic, every lifecycle state."""

from __future__ import annotations

import re
from pathlib import Path

from sharpeye_ros.ros.captioner_parameters import PARAMETERS, RELOAD

README = Path(__file__).resolve().parents[2] / "README.md"


def table(header: str) -> list[list[str]]:
    """The rows of the README table whose header line starts with ``header``."""
    lines = README.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def test_every_parameter_is_in_the_table_with_its_default_and_when_it_changes():
    rows = {}
    for names, default, when, _ in table("| parameter |"):
        for name, value in zip(re.findall(r"`(\w+)`", names), default.split(", ")):
            rows[name] = (value, when)
    assert set(rows) == {spec.name for spec in PARAMETERS}
    for spec in PARAMETERS:
        value, when = rows[spec.name]
        shown = {True: "true", False: "false", "": '""'}.get(spec.default, str(spec.default)) \
            if not isinstance(spec.default, (int, float)) or isinstance(spec.default, bool) else str(spec.default)
        assert value == shown, (spec.name, value, shown)
        expected = "unconfigured" if spec.name in RELOAD else "start-up" if spec.read_only else "any time"
        assert when == expected, spec.name


def test_every_output_and_state_is_in_the_tables():
    topics = {re.match(r"`([^`]+)`", row[0]).group(1) for row in table("| topic |")}
    assert {"caption", "caption_text", "detections", "caption_image", "caption_image/compressed",
            "caption_markers", "/diagnostics"} <= topics
    source = (README.parents[0] / "sharpeye_ros" / "ros" / "captioner_node.py").read_text()
    published = set(re.findall(r'"(caption[\w/]*|detections|/diagnostics)": \(', source))
    assert published and published <= topics, published - topics
    states = [row[0] for row in table("| state |")]
    assert {"unconfigured", "inactive (`configure`)", "active (`activate`)", "`deactivate`", "`cleanup`",
            "`shutdown` (any state)"} == set(states)
