"""record_bag writes rosbag2 folders that rosbags, rclpy and the mcap tools all read back intact."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from rosbags.rosbag2 import Reader

from sharpeye_ros.ros.image_conversion import compressed_msg_to_rgb, encode_raw, image_msg_to_rgb
from sharpeye_ros.ros.record_bag import RecordConfig, frame_stamp, main, record_bag
from sharpeye_ros.ros.scene_feed import parse_ground_truth
from sharpeye_ros.world import generate_scene
from sharpeye_ros.world.scene import SceneConfig

START = 1_234.5  # seconds; a fixed start makes every stamp predictable
SMALL = dict(width=128, height=96, scenes=3, frames_per_scene=4, rate=8.0, start_time=START,
             split="val", start_index=7)


def _read(path: Path) -> dict[str, list[tuple[int, bytes, str]]]:
    """topic -> [(bag time, raw CDR, msgtype)] in bag order, read with rosbags."""
    out: dict[str, list[tuple[int, bytes, str]]] = {}
    with Reader(path) as reader:
        for conn, stamp, raw in reader.messages():
            out.setdefault(conn.topic, []).append((stamp, bytes(raw), conn.msgtype))
    return out


def _scene_image(index: int) -> np.ndarray:
    return generate_scene("val", index, SceneConfig(width=128, height=96)).image


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_round_trip_with_rosbags(tmp_path: Path, storage: str) -> None:
    summary = record_bag(tmp_path / "bag", RecordConfig(storage=storage, compressed=True, **SMALL))
    assert summary.frames == 12 and summary.scenes == 3
    messages = _read(tmp_path / "bag")
    assert {t: len(m) for t, m in messages.items()} == {
        "/camera/image_raw": 12, "/camera/image_raw/compressed": 12, "/ground_truth": 3}
    assert summary.message_counts == {t: len(m) for t, m in messages.items()}

    from rosbags.typesys import Stores, get_typestore
    store = get_typestore(Stores.ROS2_JAZZY)
    start_ns = round(START * 1e9)
    expected_stamps = [start_ns + round(i * 1e9 / 8.0) for i in range(12)]
    assert [t for t, _, _ in messages["/camera/image_raw"]] == expected_stamps == summary.frame_stamps
    for i, (stamp, raw, msgtype) in enumerate(messages["/camera/image_raw"]):
        msg = store.deserialize_cdr(raw, msgtype)
        assert msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec == stamp
        assert msg.header.frame_id == "camera_optical_frame"
        np.testing.assert_array_equal(image_msg_to_rgb(msg), _scene_image(7 + i // 4))
    for i, (stamp, raw, msgtype) in enumerate(messages["/camera/image_raw/compressed"]):
        msg = store.deserialize_cdr(raw, msgtype)
        assert stamp == expected_stamps[i] and "jpeg" in msg.format
        decoded = compressed_msg_to_rgb(msg).astype(int)
        assert np.abs(decoded - _scene_image(7 + i // 4)).mean() < 4.0  # JPEG q90 is close
    truths = [parse_ground_truth(store.deserialize_cdr(raw, t).data)
              for _, raw, t in messages["/ground_truth"]]
    assert [t for t, _, _ in messages["/ground_truth"]] == expected_stamps[::4]
    for k, (doc, objects) in enumerate(truths):
        scene = generate_scene("val", 7 + k, SceneConfig(width=128, height=96))
        assert (doc["split"], doc["index"], doc["caption"]) == ("val", 7 + k, scene.captions[0])
        assert objects == scene.objects
        assert doc["stamp"]["sec"] * 10**9 + doc["stamp"]["nanosec"] == expected_stamps[4 * k]


@pytest.mark.parametrize("encoding", ["bgr8", "mono16", "yuv422", "bayer_grbg8"])
def test_every_encoding_stores_the_encoder_output(tmp_path: Path, encoding: str) -> None:
    one_frame = {**SMALL, "scenes": 1, "frames_per_scene": 1}
    record_bag(tmp_path / "bag", RecordConfig(encoding=encoding, **one_frame))
    from rosbags.typesys import Stores, get_typestore
    (_, raw, msgtype), = _read(tmp_path / "bag")["/camera/image_raw"]
    msg = get_typestore(Stores.ROS2_JAZZY).deserialize_cdr(raw, msgtype)
    rows = encode_raw(_scene_image(7), encoding)
    assert (msg.encoding, msg.height, msg.step) == (encoding, 96, rows.shape[1])
    assert msg.data.tobytes() == rows.tobytes()


@pytest.mark.ros
def test_rclpy_deserializes_both_storages(tmp_path: Path) -> None:
    pytest.importorskip("rclpy")
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import CompressedImage, Image
    from std_msgs.msg import String

    types = {"/camera/image_raw": Image, "/camera/image_raw/compressed": CompressedImage,
             "/ground_truth": String}
    for storage in ("sqlite3", "mcap"):
        config = RecordConfig(storage=storage, compressed=True, encoding="bgr8", **SMALL)
        record_bag(tmp_path / storage, config)
        messages = _read(tmp_path / storage)
        images = [deserialize_message(raw, Image) for _, raw, _ in messages["/camera/image_raw"]]
        for i, (msg, (stamp, _, _)) in enumerate(zip(images, messages["/camera/image_raw"])):
            assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == divmod(stamp, 10**9)
            assert (msg.width, msg.height, msg.encoding) == (128, 96, "bgr8")
            np.testing.assert_array_equal(image_msg_to_rgb(msg), _scene_image(7 + i // 4))
        for topic, msgtype in types.items():
            for _, raw, _ in messages[topic]:
                assert isinstance(deserialize_message(raw, msgtype), msgtype)


def test_mcap_reads_with_the_independent_mcap_ros2_decoder(tmp_path: Path) -> None:
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    record_bag(tmp_path / "bag", RecordConfig(storage="mcap", compressed=True, **SMALL))
    (mcap_file,) = (tmp_path / "bag").glob("*.mcap")
    by_topic: dict[str, list] = {}
    with mcap_file.open("rb") as stream:
        reader = make_reader(stream, decoder_factories=[DecoderFactory()])
        for schema, channel, message, decoded in reader.iter_decoded_messages(log_time_order=True):
            by_topic.setdefault(channel.topic, []).append((schema, message, decoded))
    assert {t: len(v) for t, v in by_topic.items()} == {
        "/camera/image_raw": 12, "/camera/image_raw/compressed": 12, "/ground_truth": 3}
    for i, (schema, message, image) in enumerate(by_topic["/camera/image_raw"]):
        assert schema.name == "sensor_msgs/msg/Image"
        stamp = image.header.stamp
        expected = frame_stamp(round(START * 1e9), i, 8.0)
        assert stamp.sec * 10**9 + stamp.nanosec == message.log_time == expected
        pixels = np.frombuffer(bytes(image.data), np.uint8).reshape(96, 128, 3)
        np.testing.assert_array_equal(pixels, _scene_image(7 + i // 4))
    assert json.loads(by_topic["/ground_truth"][2][2].data)["index"] == 9


def test_cli_writes_a_bag_and_reports_it(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main([str(tmp_path / "cli"), "--scenes", "2", "--frames-per-scene", "3", "--width", "96",
                 "--height", "64", "--topic", "/cam/img", "--truth-topic", "/truth", "--start-time", "5"])
    assert code == 0
    assert "wrote 6 frames of 2 scenes" in capsys.readouterr().out
    messages = _read(tmp_path / "cli")
    assert sorted(messages) == ["/cam/img", "/truth"]
    assert messages["/cam/img"][0][0] == 5 * 10**9


def test_cli_rejects_bad_input_with_clear_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "bag"
    small = ["--width", "96", "--height", "64"]
    assert main([str(out), "--scenes", "1", "--frames-per-scene", "1", *small]) == 0
    capsys.readouterr()
    cases = [
        ([str(out)], "already exists; pass --overwrite"),
        ([str(tmp_path / "b"), "--encoding", "rgb9"], "unsupported image encoding 'rgb9'"),
        ([str(tmp_path / "b"), "--scenes", "0"], "scenes must be >= 1"),
        ([str(tmp_path / "b"), "--rate", "0"], "rate must be > 0"),
        ([str(tmp_path / "b"), "--split", "nope"], "split must be one of"),
        ([str(tmp_path / "b"), "--width", "32"], "32x480 rejected"),
        ([str(tmp_path / "b"), "--topic", "camera"], "topic must be an absolute topic name"),
        ([str(tmp_path / "missing" / "b")], "does not exist"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("record_bag: error:") and message in err, (argv, err)
    assert not (tmp_path / "b").exists()  # nothing written on bad input

    (tmp_path / "notabag").mkdir()
    (tmp_path / "notabag" / "keep.txt").write_text("precious")
    assert main([str(tmp_path / "notabag"), "--overwrite"]) == 2
    assert "not a rosbag2 folder" in capsys.readouterr().err
    assert (tmp_path / "notabag" / "keep.txt").exists()
    assert main([str(out), "--overwrite", "--scenes", "1", "--frames-per-scene", "2", *small]) == 0
    assert len(_read(out)["/camera/image_raw"]) == 2


def test_recorder_never_imports_rclpy(tmp_path: Path) -> None:
    # cwd outside the repository so the installed package is imported (see the brief).
    code = "import sys, sharpeye_ros.ros.record_bag; print('rclpy' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


# ---- which distributions' `ros2 bag play` read the metadata (item: --distro) -------------
# Pure-Python mirrors of the readers, from ros2/rosbag2's sources:
# - humble (d256a5b): rosbag2_storage/src/rosbag2_storage/metadata_io.cpp reads
#   offered_qos_profiles `as<std::string>()` (version >= 4); rosbag2_transport/src/
#   rosbag2_transport/qos.cpp decodes each policy `as<int>()`, the durations as
#   {sec, nsec}, with no try/catch. The MCAP plugin hands the channel's metadata string
#   to the same decoder.
# - jazzy (64717ee): rosbag2_storage/include/rosbag2_storage/yaml.hpp reads a YAML list
#   (version >= 9) or a string (4..8); rosbag2_storage/src/rosbag2_storage/qos.cpp takes an
#   integer history as the old format and names ("reliable") otherwise.
POLICIES = ("history", "reliability", "durability", "liveliness")
DURATIONS = ("deadline", "lifespan", "liveliness_lease_duration")


def _humble_qos(text: object) -> list[dict]:
    import yaml

    if not isinstance(text, str):
        raise TypeError(f"offered_qos_profiles is a {type(text).__name__}, Humble reads a string")
    profiles = yaml.safe_load(text)
    for profile in profiles:
        for name in POLICIES + ("depth",):
            if type(profile[name]) is not int:
                raise TypeError(f"{name}: {profile[name]!r} is not an integer (as<int>() throws)")
        for name in DURATIONS:
            assert {type(profile[name]["sec"]), type(profile[name]["nsec"])} == {int}
        assert type(profile["avoid_ros_namespace_conventions"]) is bool
    return profiles


def _jazzy_qos(value: object, version: int) -> list[dict]:
    import yaml

    profiles = value if version >= 9 else yaml.safe_load(value)  # type: ignore[arg-type]
    assert isinstance(profiles, list)
    integers = type(profiles[0]["history"]) is int
    for profile in profiles:
        for name in POLICIES:
            assert type(profile[name]) is (int if integers else str), (name, profile[name])
    return profiles


def _reliable(profile: dict) -> bool:
    return profile["reliability"] in (1, "reliable")  # RMW_QOS_POLICY_RELIABILITY_RELIABLE


def _metadata_qos(path: Path) -> tuple[int, dict[str, object]]:
    import yaml

    info = yaml.safe_load((path / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    return info["version"], {t["topic_metadata"]["name"]: t["topic_metadata"]["offered_qos_profiles"]
                             for t in info["topics_with_message_count"]}


def _mcap_qos(path: Path) -> dict[str, str]:
    from mcap.reader import make_reader

    (mcap_file,) = path.glob("*.mcap")
    with mcap_file.open("rb") as stream:
        summary = make_reader(stream).get_summary()
    return {c.topic: c.metadata["offered_qos_profiles"] for c in summary.channels.values()}


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
@pytest.mark.parametrize("distro", ["humble", "jazzy"])
def test_distro_choice_writes_metadata_that_distro_plays(tmp_path: Path, distro: str, storage: str) -> None:
    small = {**SMALL, "scenes": 1, "frames_per_scene": 2}
    record_bag(tmp_path / "bag", RecordConfig(storage=storage, compressed=True, distro=distro, **small))
    with Reader(tmp_path / "bag") as reader:  # rosbags reads either back, messages intact
        assert sum(1 for _ in reader.messages()) == 5
    version, offered = _metadata_qos(tmp_path / "bag")
    assert version == {"humble": 8, "jazzy": 9}[distro]
    sources = [offered] + ([_mcap_qos(tmp_path / "bag")] if storage == "mcap" else [])
    for qos in sources:
        assert set(qos) == {"/camera/image_raw", "/camera/image_raw/compressed", "/ground_truth"}
        for topic, value in qos.items():
            profiles = _jazzy_qos(value, version if qos is offered else 8)  # Jazzy plays both
            assert all(_reliable(p) for p in profiles), (topic, profiles)  # REP 2003: drivers offer reliable
            if distro == "humble":
                assert [p["reliability"] for p in _humble_qos(value)] == [1]
            else:
                with pytest.raises(TypeError):  # why Humble cannot play a Jazzy-format bag
                    _humble_qos(value)


def test_default_distro_is_the_one_both_play(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main([str(tmp_path / "bag"), "--scenes", "1", "--frames-per-scene", "1", "--width", "96",
                 "--height", "64", "--storage", "mcap"]) == 0
    assert "for humble" in capsys.readouterr().out
    version, offered = _metadata_qos(tmp_path / "bag")
    assert version == 8
    for value in list(offered.values()) + list(_mcap_qos(tmp_path / "bag").values()):
        _humble_qos(value)
        _jazzy_qos(value, 8)
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "b"), "--distro", "iron"])
    assert exit_info.value.code == 2 and "invalid choice: 'iron'" in capsys.readouterr().err
