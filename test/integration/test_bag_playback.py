"""The installed captioner, run on a recorded bag replayed at its timing with /clock (use_sim_time).

The tiny random model checks what does not depend on caption quality: header copying, the
rate limit on message time, sim-time latency and boxes in bounds. The shipped demo model
(models/demo) must also name the scenes' objects and point at them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import pytest

rclpy = pytest.importorskip("rclpy")
pytestmark = [pytest.mark.ros, pytest.mark.slow]

from sharpeye_ros.ros.captioner_parameters import SPECS  # noqa: E402
from sharpeye_ros.ros.parameters import ros_arguments  # noqa: E402
from sharpeye_ros.ros.processes import installed_executable  # noqa: E402
from sharpeye_ros.ros.record_bag import RecordConfig, record_bag  # noqa: E402
from sharpeye_ros.ros.scene_feed import parse_ground_truth  # noqa: E402
from sharpeye_ros.ros.stamps import stamp_ns  # noqa: E402

TOPIC = "/camera/image_raw"
MODEL_WAIT = 90.0  # seconds for the captioner to import torch and load its model


def _captioner_command(executable: Path, params: dict[str, Any]) -> list[str]:
    return [str(executable), "--ros-args", "-r", f"image:={TOPIC}", "-r", f"image/compressed:={TOPIC}/compressed",
            "-p", "use_sim_time:=true", *ros_arguments(SPECS, params)]


@pytest.fixture
def play(tmp_path: Path, start_process: Any, ros_node: Any, bag_player: Any) -> Any:
    """``play(bag_config, captioner_params, tail_seconds)`` -> (captions, player)."""
    return lambda bag, params, tail_seconds=2.0: _play(tmp_path, start_process, ros_node, bag_player,
                                                       installed_executable("captioner"), bag, params,
                                                       tail_seconds)


def _play(tmp_path: Path, start_process: Any, ros_node: Any, bag_player: Any, executable: Path,
          bag: RecordConfig, params: dict[str, Any], tail_seconds: float) -> tuple[list[Any], Any]:
    """Record ``bag``, start the captioner with ``params``, replay the bag; the captions."""
    from sharpeye_ros.msg import Caption

    record_bag(tmp_path / "bag", bag)
    node, executor = ros_node
    captions: list[Any] = []
    node.create_subscription(Caption, "/caption", captions.append, 50)
    captioner = start_process(_captioner_command(executable, params), "captioner")
    player = bag_player(tmp_path / "bag")
    alive = lambda: captioner.process.poll() is None  # noqa: E731
    topic = TOPIC + ("/compressed" if params.get("image_transport") == "compressed" else "")
    try:
        player.wait_for_subscribers(executor, [topic], MODEL_WAIT, alive)
        player.play(executor, tail_seconds=tail_seconds, alive=alive)
    except AssertionError as err:
        raise AssertionError(f"{err}\ncaptioner output:\n{captioner.output()[-3000:]}") from None
    code = captioner.stop()
    assert code == 0, f"captioner exit code {code} after SIGINT:\n{captioner.output()[-3000:]}"
    assert "Traceback" not in captioner.output()
    return captions, player


def _check_headers_rate_and_boxes(captions: list[Any], player: Any, width: int, height: int,
                                  max_rate: float) -> None:
    frame_stamps = {stamp for stamp, topic, _ in player.messages if topic.startswith(TOPIC)}
    stamps = [stamp_ns(c) for c in captions]
    assert set(stamps) <= frame_stamps, "every caption carries the stamp of a recorded frame"
    assert all(c.header.frame_id == "camera_optical_frame" for c in captions)
    gaps = [(b - a) / 1e9 for a, b in zip(stamps, stamps[1:])]
    assert min(gaps) >= 1.0 / max_rate - 1e-6, f"rate limit broken on message time: gaps {gaps}"
    for c in captions:
        assert (c.image_width, c.image_height) == (width, height)
        # Latency is measured on the node's clock; under sim time it is seconds, whereas a
        # node on the wall clock would report the decades since the bag's 1000 s stamps.
        assert 0.0 <= c.latency_seconds < 30.0, c.latency_seconds
        assert c.model_id and c.caption.strip()
        for region in c.regions:
            roi = region.roi
            assert roi.width > 0 and roi.height > 0
            assert roi.x_offset + roi.width <= width and roi.y_offset + roi.height <= height
            assert 0.0 <= region.score <= 1.0


def test_tiny_model_on_bag_raw(play: Any, tiny_model_dir: Path) -> None:
    # Frames every 0.2 s, captions at most every 2 s of message time: the tiny model needs
    # well under 2 s a caption, so without the limit the gaps would be shorter.
    bag = RecordConfig(scenes=2, frames_per_scene=25, rate=5.0, width=320, height=240, start_time=1000.0)
    captions, player = play(bag, {"model_path": tiny_model_dir, "max_rate": 0.5, "device": "cpu"})
    # 5 on a quiet machine; a loaded one (2 cores shared with training) has given 2, and
    # two captions still show one gap on message time.
    assert len(captions) >= 2, f"only {len(captions)} captions from 10 s of frames"
    _check_headers_rate_and_boxes(captions, player, 320, 240, max_rate=0.5)


def test_tiny_model_on_bag_compressed(play: Any, tiny_model_dir: Path) -> None:
    bag = RecordConfig(scenes=2, frames_per_scene=10, rate=5.0, width=320, height=240, compressed=True,
                       start_time=2000.0)
    captions, player = play(bag, {"model_path": tiny_model_dir, "max_rate": 1.0,
                                  "image_transport": "compressed", "refine": "false"})
    assert len(captions) >= 2, f"only {len(captions)} captions from 4 s of JPEG frames"
    assert not any(c.refined for c in captions)
    _check_headers_rate_and_boxes(captions, player, 320, 240, max_rate=1.0)


def _truth_at(player: Any, stamp_ns: int) -> Optional[tuple[dict, tuple]]:
    shown = [parse_ground_truth(raw_to_string(raw)) for stamp, topic, raw in player.messages
             if topic == "/ground_truth" and stamp <= stamp_ns]
    return shown[-1] if shown else None


def raw_to_string(raw: bytes) -> str:
    """The ``data`` of a CDR-serialized std_msgs/String."""
    from rclpy.serialization import deserialize_message
    from std_msgs.msg import String

    return deserialize_message(raw, String).data


def test_demo_model_names_and_points_at_objects(play: Any) -> None:
    from sharpeye_ros.evaluation.metrics import grounding_scores, object_scores
    from sharpeye_ros.model import default_model_path

    demo = default_model_path()
    if not (demo / "config.json").is_file():
        pytest.fail(f"the shipped demo model is missing ({demo}): this test needs models/demo, which the "
                    "training stage ships; it is never skipped")
    # 8 scenes of 1.5 s at 640x480 (the training resolution), about one caption per scene.
    bag = RecordConfig(scenes=8, frames_per_scene=6, rate=4.0, start_time=3000.0)
    captions, player = play(bag, {"max_rate": 0.8}, tail_seconds=3.0)
    assert len(captions) >= 3, f"only {len(captions)} captions from 12 s of frames"
    _check_headers_rate_and_boxes(captions, player, 640, 480, max_rate=0.8)

    texts, regions, objects = {}, {}, {}
    for i, c in enumerate(captions):
        truth = _truth_at(player, stamp_ns(c))
        assert truth is not None
        texts[i], objects[i] = c.caption, truth[1]
        regions[i] = [((r.roi.x_offset, r.roi.y_offset, r.roi.x_offset + r.roi.width,
                        r.roi.y_offset + r.roi.height), r.phrase) for r in c.regions]
    naming = object_scores(texts, objects)
    grounding = grounding_scores(texts, regions, objects)
    report = (f"large recall {naming['recall_large']:.0f}%, all recall {naming['recall_all']:.0f}%, "
              f"precision {naming['precision_all']:.0f}%, pointing {grounding['pointing_all']:.0f}%\n"
              + "\n".join(f"{texts[i]!r} vs {[(o.colour, o.shape, o.size_class) for o in objects[i]]}"
                          for i in texts))
    # Bounds set below docs/evaluation.md's 500-scene figures (recall large ~90%,
    # precision all ~55%, pointing ~89%) by about 2.5 standard errors of ~20 objects in
    # ~10 captions; naming colour and shape at random would score about 2%.
    assert naming["recall_large"] >= 70.0, report
    assert naming["precision_all"] >= 25.0, report
    assert grounding["pointing_all"] >= 50.0, report
