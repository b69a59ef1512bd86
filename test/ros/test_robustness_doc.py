"""docs/robustness.md is true: every row of its tables is an input sent to the node here,
and the outcome, the message and the counter the row names are what the node does.

A row without a case here, or a case without a row, fails too: the page and the code
change together."""

from __future__ import annotations

import math
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

rclpy = pytest.importorskip("rclpy")
pytestmark = pytest.mark.ros

DOC = Path(__file__).resolve().parents[2] / "docs" / "robustness.md"
S = 1_000_000_000


def tables(text: str) -> dict[str, list[list[str]]]:
    """The rows (cells stripped of backticks) of each ``## section``'s table."""
    out: dict[str, list[list[str]]] = {}
    section = ""
    for line in text.splitlines():
        if line.startswith("## "):
            section = line[3:].strip()
        elif line.startswith("|") and not set(line) <= set("|- "):
            cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
            out.setdefault(section, []).append(cells)
    return {name: rows[1:] for name, rows in out.items()}  # without the header row


def doc_rows(section: str) -> dict[str, list[str]]:
    return {row[0]: row[1:] for row in tables(DOC.read_text())[section]}


# ----------------------------------------------------------------------------- frame cases

def _raw(encoding="rgb8", width=64, height=48, step=None, data=None):
    from sensor_msgs.msg import Image

    msg = Image(encoding=encoding, width=width, height=height)
    msg.step = step if step is not None else width * {"rgb8": 3, "32FC1": 4}[encoding]
    msg.data = data if data is not None else bytes(msg.step * height)
    return msg


def _jpeg(frame):
    from sharpeye_ros.ros.image_conversion import rgb_to_compressed

    return rgb_to_compressed(frame(64, 48), "jpeg")


def _compressed(h, data, fmt="jpeg"):
    from sensor_msgs.msg import CompressedImage

    h.publish(h.set_header(CompressedImage(format=fmt, data=data), h.now_ns()))


def _png(frame):
    from sharpeye_ros.ros.image_conversion import rgb_to_compressed

    return rgb_to_compressed(frame(64, 48), "png")


# Each case: (harness parameters, transport, act(h, model, frame, mark, observe)). `mark()` is
# called once the set-up is done: what happens after it is what the row describes. A case
# may call `observe()` itself, to look before what follows (e.g. releasing a blocked model).
FAST = {"max_rate": 100.0, "refine": False}


def _well_formed(h, model, frame, mark, observe):
    mark()
    h.publish_frame(h.now_ns())


def _send(msg_of: Callable[[], Any]):
    def act(h, model, frame, mark, observe):
        mark()
        h.publish(h.set_header(msg_of(), h.now_ns()))
    return act


def _send_compressed(data_of: Callable[[Any], bytes], fmt: str = "jpeg"):
    def act(h, model, frame, mark, observe):
        mark()
        _compressed(h, data_of(frame), fmt)
    return act


def _model_text(text):
    def act(h, model, frame, mark, observe):
        model.text = text
        mark()
        h.publish_frame(h.now_ns())
    return act


def _nan_regions(h, model, frame, mark, observe):
    from sharpeye_ros.model import Region

    model.regions = [Region(math.nan, 0.0, 10.0, 10.0, 0.5, "red square")]
    mark()
    h.publish_frame(h.now_ns())


def _model_raises(h, model, frame, mark, observe):
    model.fail_next = 1
    mark()
    h.publish_frame(h.now_ns())


def _too_fast(h, model, frame, mark, observe):
    t0 = h.now_ns()
    h.publish_frame(t0)
    h.wait_captions(1)
    mark()
    h.publish_frame(t0 + S // 10)  # 0.1 s later at 2 Hz


def _steady_camera(h, model, frame, mark, observe):
    h.publish_frame(h.now_ns())
    h.wait_captions(1)
    mark()
    start = time.monotonic()
    for k in range(1, 26):  # 2.5 s of a live 10 Hz camera, all before the next due frame (5 s)
        time.sleep(max(0.0, start + k * 0.1 - time.monotonic()))
        h.publish_frame(h.now_ns(), wait=False)
    observe()


def _while_busy(h, model, frame, mark, observe):
    t0 = h.now_ns() - 10 * S
    model.release.clear()
    h.publish_frame(t0)
    assert model.entered.wait(10)
    mark()
    h.publish_frame(t0 + S)
    h.publish_frame(t0 + 2 * S)  # replaces the one before, still waiting
    observe()
    model.release.set()


def _zero_stamp(h, model, frame, mark, observe):
    mark()
    h.publish_frame(0)


def _frozen_stamp(h, model, frame, mark, observe):
    t0 = h.now_ns()
    h.publish_frame(t0)
    h.wait_captions(1)
    time.sleep(0.3)
    mark()
    h.publish_frame(t0)


def _out_of_order(h, model, frame, mark, observe):
    t0 = h.now_ns()
    h.publish_frame(t0)
    h.wait_captions(1)
    mark()
    h.publish_frame(t0 - S // 2)


def _jump_back(h, model, frame, mark, observe):
    t0 = h.now_ns()
    h.publish_frame(t0 + S // 2)
    h.wait_captions(1)
    mark()
    h.publish_frame(t0 - S // 4)  # 0.75 s back: under the 1 s threshold, a loop all the same
    h.publish_frame(t0 - S // 5)  # ... because the next frame goes on from it


def _stamp_ahead(h, model, frame, mark, observe):
    mark()
    h.publish_frame(h.now_ns() + 1000 * S)


def _no_clock(h, model, frame, mark, observe):
    mark()
    h.publish_frame(1_800_000_000 * S)


def _silence(h, model, frame, mark, observe):
    h.publish_frame(h.now_ns())
    h.wait_captions(1)
    h.node.destroy_publisher(h.image_pub)  # the camera dies
    mark()
    observe(until_said="no image on")


CASES: dict[str, tuple[dict, str, Callable]] = {
    "a well-formed frame": (FAST, "raw", _well_formed),
    "raw frame in an unsupported encoding (32FC1)": (FAST, "raw", _send(lambda: _raw("32FC1"))),
    "raw frame of zero width or height": (FAST, "raw", _send(lambda: _raw(width=0, height=0, step=0))),
    "raw frame whose step is less than a row": (FAST, "raw", _send(lambda: _raw(step=100, data=bytes(4800)))),
    "raw frame with less data than step*height": (FAST, "raw", _send(lambda: _raw(data=bytes(100)))),
    "raw frame with more data than step*height": (FAST, "raw", _send(lambda: _raw(data=bytes(48 * 192 + 7)))),
    "frame with more pixels than max_image_pixels": (FAST, "raw", _send(
        lambda: _raw(width=100_000, height=100_000, step=300_000, data=b""))),
    "long, thin frame (16000x1, beyond max_aspect_ratio)": (FAST, "raw", _send(
        lambda: _raw(width=16000, height=1))),
    "compressed frame that is neither JPEG nor PNG": (FAST, "compressed", _send_compressed(
        lambda frame: b"hello, world")),
    "compressed frame in another format (theora)": (FAST, "compressed", _send_compressed(
        lambda frame: b"\x00\x00\x01", "theora")),
    "JPEG that does not decode": (FAST, "compressed", _send_compressed(
        lambda frame: _jpeg(frame)[:300] + bytes(200))),
    'damaged JPEG that still decodes (libjpeg: "Corrupt JPEG data")': (FAST, "compressed", _send_compressed(
        lambda frame: _jpeg(frame)[:-2] + bytes(range(1, 40)) + _jpeg(frame)[-2:])),
    "truncated PNG": (FAST, "compressed", _send_compressed(lambda frame: _png(frame)[: len(_png(frame)) // 2],
                                                           "png")),
    "model writes an empty caption (NaN weights or activations)": (FAST, "raw", _model_text("")),
    "model's regions are not finite": (FAST, "raw", _nan_regions),
    "model raises (out of memory, a bug)": (FAST, "raw", _model_raises),
    "frames faster than max_rate (on header.stamp)": ({"max_rate": 2.0, "refine": False}, "raw", _too_fast),
    "frames of a steady camera before the next due one (the read window)": ({"max_rate": 0.2, "refine": False},
                                                                           "raw", _steady_camera),
    "frames arriving while a caption is written": (FAST, "raw", _while_busy),
    "header.stamp = 0 (an unstamped driver)": (FAST, "raw", _zero_stamp),
    "header.stamp that does not advance (a frozen driver clock)": ({"max_rate": 10.0, "refine": False}, "raw",
                                                                   _frozen_stamp),
    "a frame stamped up to 1 s before a newer one": (FAST, "raw", _out_of_order),
    "stamps that jump back (a rosbag loop, even one shorter than 1 s)": ({"max_rate": 2.0, "refine": False},
                                                                         "raw", _jump_back),
    "a frame stamped more than 1 s ahead of the node's clock": (FAST, "raw", _stamp_ahead),
    "use_sim_time without a /clock publisher": ({**FAST, "use_sim_time": True}, "raw", _no_clock),
    "no frames for a while (a camera that died, a wrong topic or transport)": (FAST, "raw", _silence),
}


def _number(value: str) -> float:
    return -math.inf if value == "n/a" else float(value)


def outcome(before: dict, after: dict, gate_resets: int, new_captions: list) -> str:
    """The row's outcome label, from what changed between ``before`` and ``after``."""
    grew = {k for k in after if k in before and re.fullmatch(r"-?[\d.]+|n/a", after[k])
            and re.fullmatch(r"-?[\d.]+|n/a", before[k]) and _number(after[k]) > _number(before[k])}
    if not new_captions:
        if any(k.startswith("errors_") for k in grew):
            return "rejected"
        if any(k.startswith("frames_dropped_") for k in grew):
            return "dropped"
        return "warned"
    extras = []
    if "warnings_conversion" in grew:
        extras.append("warned")
    if after["throttle_clock"] == "arrival time":
        extras.append("on arrival time")
    if gate_resets:
        extras.append("new timeline")
    if math.isnan(new_captions[-1].latency_seconds):
        extras.append("latency NaN")
    return ", ".join(["captioned", *extras])


def test_every_row_has_a_case_and_every_case_a_row():
    rows = set(doc_rows("Frames")) | set(doc_rows("Stamps and clocks"))
    assert rows == set(CASES), (f"rows without a case: {sorted(rows - set(CASES))}; "
                                f"cases without a row: {sorted(set(CASES) - rows)}")


@pytest.mark.parametrize("name", list(CASES))
def test_row(name, harness, scripted_model, frame, capfd, monkeypatch):
    from sharpeye_ros.ros import captioner_node

    documented = {**doc_rows("Frames"), **doc_rows("Stamps and clocks")}[name]
    want_outcome, excerpt, counter = documented
    monkeypatch.setattr(captioner_node, "NO_INPUT_WARN", 1.0)
    params, transport, act = CASES[name]
    h = harness(scripted_model, {**params, "diagnostics_period": 0.2}, transport=transport)
    marks: dict[str, Any] = {}

    def mark():
        capfd.readouterr()
        marks.update(report=dict(h.captioner.health_report().values), captions=len(h.snapshot()),
                     resets=h.captioner._gate.counters().time_resets)

    def grown() -> bool:
        return _number(dict(h.captioner.health_report().values)[counter]) > _number(marks["report"][counter])

    def observe(until_said: str = ""):
        """Look now (once the counter grew and, if given, the log said ``until_said``)."""
        assert h.wait_for(grown, timeout=20), (name, h.captioner.health_report())
        said = capfd.readouterr().err
        deadline = time.monotonic() + 20
        while until_said not in said and time.monotonic() < deadline:
            time.sleep(0.1)
            said += capfd.readouterr().err
        marks.update(after=dict(h.captioner.health_report().values), new=h.snapshot()[marks["captions"]:],
                     gate_resets=h.captioner._gate.counters().time_resets - marks["resets"], said=said)

    act(h, scripted_model, frame, mark, observe)
    if "after" not in marks:
        gate = h.captioner._gate
        assert h.wait_for(grown, timeout=20), (name, h.captioner.health_report())
        # Then until the worker is done and every caption it published has come back.
        assert h.wait_for(lambda: not gate.busy and h.captioner.health_report().value("frames_captioned")
                          == str(len(h.snapshot())), timeout=20), (name, h.captioner.health_report())
        observe()
    after = marks["after"]
    got = outcome(marks["report"], after, marks["gate_resets"], marks["new"])
    assert got == want_outcome, (name, got, after)
    if excerpt:
        said = marks["said"] + " ".join(v for k, v in after.items() if k.startswith("last_"))
        assert excerpt in said, (name, excerpt, said)


# ----------------------------------------------------------------------------- models

def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _nan_weights(model_dir: Path) -> None:
    import json

    path = model_dir / "model.safetensors"
    data = bytearray(path.read_bytes())
    header = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])
    start = 8 + int.from_bytes(data[:8], "little") + header["connector.0.weight"]["data_offsets"][0]
    data[start : start + 4] = b"\x00\x00\xc0\x7f"
    path.write_bytes(bytes(data))


MODEL_CASES: dict[str, Callable[[Path], None]] = {
    "model_path that does not exist": lambda d: shutil.rmtree(d),
    "weights holding NaN or infinity": _nan_weights,
    "model directory without tokenizer.json": lambda d: (d / "tokenizer.json").unlink(),
    "truncated model.safetensors": lambda d: (d / "model.safetensors").write_bytes(
        (d / "model.safetensors").read_bytes()[:1000]),
}


def test_every_model_row_has_a_case():
    assert set(doc_rows("Models that do not load")) == set(MODEL_CASES)


@pytest.mark.parametrize("name", list(MODEL_CASES))
def test_model_row(name, rclpy_context, tiny_model_dir, tmp_path):
    from rclpy.parameter import Parameter

    from sharpeye_ros.ros.captioner_node import StartupError, start

    (excerpt,) = doc_rows("Models that do not load")[name]
    model = _copy(tiny_model_dir, tmp_path / "model")
    MODEL_CASES[name](model)
    with pytest.raises(StartupError) as info:
        start(context=rclpy_context, parameter_overrides=[Parameter("model_path", value=str(model))])
    assert excerpt in str(info.value), str(info.value)
