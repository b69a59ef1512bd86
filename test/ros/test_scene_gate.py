"""The scene gate: the thumbnail measure, and what it decides for still, changed and small
changes (pure: no ROS)."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from sharpeye_ros.ros.frame_gate import FrameGate
from sharpeye_ros.ros.scene_gate import (CAPTION, DEFAULT_MIN_CHANGE, REPUBLISH, SKIP, THUMBNAIL_SIDE, SceneGate,
                                         thumbnail, view_change)
from sharpeye_ros.world import CHANGES, add_sensor_noise, scene_change

S = 1_000_000_000


@pytest.mark.parametrize("height, width, exact", [(480, 640, True), (1080, 1920, True), (720, 1280, False),
                                                  (481, 640, True), (752, 480, True)])
def test_thumbnail_is_the_area_average(height, width, exact):
    # A whole factor (640x480, 1920x1080, 1280x720) takes a cheaper box filter: the same
    # average as INTER_AREA, but for ties at even factors; any other size is INTER_AREA.
    import cv2

    rgb = np.random.default_rng(height).integers(0, 256, (height, width, 3), dtype=np.uint8)
    scale = THUMBNAIL_SIDE / max(height, width)
    area = cv2.resize(rgb, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)
    got = thumbnail(rgb)
    assert got.shape == area.shape and got.flags.c_contiguous
    assert np.abs(got.astype(int) - area).max() <= (0 if exact else 1)


def test_thumbnail_keeps_the_aspect_ratio():
    assert thumbnail(np.zeros((480, 640, 3), np.uint8)).shape == (96, THUMBNAIL_SIDE, 3)
    assert thumbnail(np.zeros((1080, 720, 3), np.uint8)).shape == (THUMBNAIL_SIDE, 85, 3)
    small = np.arange(60 * 80 * 3, dtype=np.uint8).reshape(60, 80, 3)
    np.testing.assert_array_equal(thumbnail(small), small)  # already small: kept as it is
    with pytest.raises(ValueError, match="uint8"):
        thumbnail(np.zeros((48, 64), np.uint8))


def test_view_change_is_the_largest_cell_difference():
    a = np.full((96, 128, 3), 100, np.uint8)
    b = a.copy()
    assert view_change(a, b) == 0.0
    b[40, 50, 2] = 151  # one cell, one channel
    assert view_change(a, b) == pytest.approx(51 / 255)
    assert view_change(b, a) == view_change(a, b)
    with pytest.raises(ValueError, match="different sizes"):
        view_change(a, a[:90])


def test_colour_sees_an_object_as_bright_as_the_background():
    # Why the thumbnails keep colour: a red square whose luminance equals the grey around it.
    frame = np.full((480, 640, 3), 88, np.uint8)
    after = frame.copy()
    after[200:216, 300:316] = (225, 30, 30)  # luminance 0.299*225 + 0.587*30 + 0.114*30 = 88
    grey = [cv2.cvtColor(thumbnail(f), cv2.COLOR_RGB2GRAY) for f in (frame, after)]
    assert view_change(*grey) < 0.01
    assert view_change(thumbnail(frame), thumbnail(after)) >= DEFAULT_MIN_CHANGE


@pytest.mark.parametrize("kind", CHANGES)
def test_no_scene_change_of_the_world_is_taken_for_still_at_the_default(kind):
    # A small object appearing included: the benchmark reports the rates over more scenes.
    changes = [view_change(thumbnail(c.before), thumbnail(c.after))
               for c in (scene_change("test", i, kind) for i in range(30))]
    assert min(changes) >= DEFAULT_MIN_CHANGE, sorted(changes)[:3]


def test_camera_noise_on_a_still_view_stays_below_the_default():
    rng = np.random.default_rng(0)
    for index in range(10):
        image = scene_change("test", index, "new_object").before
        frames = [thumbnail(add_sensor_noise(image, 8.0, rng)) for _ in range(3)]
        assert max(view_change(frames[0], f) for f in frames[1:]) < DEFAULT_MIN_CHANGE


# ---- decisions ------------------------------------------------------------------------


def frame(value: int = 100) -> np.ndarray:
    return np.full((96, 128, 3), value, np.uint8)


def test_gating_off_always_captions():
    gate = SceneGate(min_change=0.0)
    assert not gate.enabled
    gate.captioned(frame(), 0)
    verdict = gate.judge(frame(), 1 * S)
    assert verdict.action == CAPTION and not verdict.still and math.isnan(verdict.change)


def test_a_still_view_republishes_until_it_changes():
    gate = SceneGate(min_change=0.1, on_still="republish", max_still_seconds=10.0)
    assert gate.judge(frame(), 0).action == CAPTION  # nothing to compare with yet
    gate.captioned(frame(), 0)
    still = gate.judge(frame(105), 1 * S)  # 5/255 = 0.02: noise, not a change
    assert still.action == REPUBLISH and still.still and still.change == pytest.approx(5 / 255)
    changed = frame()
    changed[10:12, 10:12] = 160
    verdict = gate.judge(changed, 2 * S)
    assert verdict.action == CAPTION and verdict.change == pytest.approx(60 / 255)


def test_skip_mode_and_reconfiguring_at_run_time():
    gate = SceneGate(min_change=0.1, on_still="skip")
    gate.captioned(frame(), 0)
    assert gate.judge(frame(), 1 * S).action == SKIP
    gate.configure(on_still="republish")
    assert gate.judge(frame(), 1 * S).action == REPUBLISH
    gate.configure(min_change=0.01)
    assert gate.judge(frame(105), 1 * S).action == CAPTION  # 0.02 >= 0.01 now
    gate.configure(min_change=0.0)
    assert gate.judge(frame(), 1 * S).action == CAPTION


def test_the_reference_is_the_last_captioned_frame_so_slow_drift_adds_up():
    gate = SceneGate(min_change=0.1)
    gate.captioned(frame(100), 0)
    for step, value in enumerate(range(102, 140, 2), start=1):  # 2 levels per frame
        verdict = gate.judge(frame(value), step * S // 10)
        if value - 100 >= 0.1 * 255:
            assert verdict.action == CAPTION
            break
        assert verdict.action == REPUBLISH
    else:
        pytest.fail("the drift was never captioned")


def test_still_for_max_still_seconds_captions_again():
    gate = SceneGate(min_change=0.1, max_still_seconds=3.0)
    gate.captioned(frame(), 10 * S)
    assert gate.judge(frame(), 12 * S).action == REPUBLISH
    verdict = gate.judge(frame(), 13 * S)
    assert verdict.action == CAPTION and "max_still_seconds" in verdict.reason
    gate.captioned(frame(), 13 * S)
    assert gate.judge(frame(), 14 * S).action == REPUBLISH


def test_a_slow_caption_stretches_the_still_period_to_its_share():
    # A 22 s caption (the paper size on a 2-core CPU) at max_still_share 0.02: 22 / 0.02 =
    # 1100 s, not 60 s, so that forced captions take 2% of the node's time.
    gate = SceneGate(min_change=0.1, max_still_seconds=60.0, max_still_share=0.02)
    assert gate.still_period == 60.0  # no caption timed yet
    gate.captioned(frame(), 10 * S, seconds=22.0)
    assert gate.still_period == pytest.approx(1100.0)
    assert gate.judge(frame(), 70 * S).action == REPUBLISH  # 60 s still: not yet
    assert gate.judge(frame(), (10 + 1099) * S).action == REPUBLISH
    verdict = gate.judge(frame(), (10 + 1100) * S)
    assert verdict.action == CAPTION and "1100.0 s" in verdict.reason
    # The next caption was faster: the period follows the last caption's time.
    gate.captioned(frame(), 1110 * S, seconds=0.5)
    assert gate.still_period == 60.0
    assert gate.judge(frame(), 1170 * S).action == CAPTION


def test_a_fast_caption_keeps_max_still_seconds():
    gate = SceneGate(min_change=0.1, max_still_seconds=60.0, max_still_share=0.02)
    gate.captioned(frame(), 0, seconds=0.2)  # a Jetson's caption: 0.2 / 0.02 = 10 s < 60 s
    assert gate.still_period == 60.0
    assert gate.judge(frame(), 59 * S).action == REPUBLISH
    assert gate.judge(frame(), 60 * S).action == CAPTION


def test_share_zero_keeps_max_still_seconds_whatever_the_caption_took():
    gate = SceneGate(min_change=0.1, max_still_seconds=3.0, max_still_share=0.0)
    gate.captioned(frame(), 10 * S, seconds=30.0)
    assert gate.still_period == 3.0
    assert gate.judge(frame(), 13 * S).action == CAPTION
    # Changed at run time: the stretch applies from now on, and off again.
    gate.configure(max_still_share=0.5)
    assert gate.still_period == 60.0 and gate.judge(frame(), 13 * S).action == REPUBLISH
    gate.configure(max_still_share=0.0)
    assert gate.still_period == 3.0
    # An untimed caption (None) keeps the last time; a meaningless one is ignored.
    gate.configure(max_still_share=0.5)
    gate.captioned(frame(), 20 * S)
    gate.captioned(frame(), 20 * S, seconds=float("nan"))
    assert gate.still_period == 60.0


def test_a_change_is_captioned_at_once_however_long_the_period():
    gate = SceneGate(min_change=0.1, max_still_seconds=60.0, max_still_share=0.02)
    gate.captioned(frame(), 0, seconds=100.0)  # a 5000 s period
    changed = frame()
    changed[10:12, 10:12] = 160
    verdict = gate.judge(changed, S // 2)
    assert verdict.action == CAPTION and "changed" in verdict.reason


@pytest.mark.parametrize("case, reason", [("stamps back", "new timeline"), ("new size", "size changed"),
                                          ("reset", "nothing|no captioned frame")])
def test_no_comparison_means_a_caption(case, reason):
    gate = SceneGate(min_change=0.1)
    gate.captioned(frame(), 10 * S)
    thumb, stamp = frame(), 11 * S
    if case == "stamps back":
        stamp = 5 * S
    elif case == "new size":
        thumb = np.full((72, 128, 3), 100, np.uint8)
    else:
        gate.reset()
    verdict = gate.judge(thumb, stamp)
    assert verdict.action == CAPTION
    assert any(word in verdict.reason for word in reason.split("|"))


@pytest.mark.parametrize("kwargs", [{"min_change": -0.1}, {"min_change": 1.5}, {"on_still": "drop"},
                                    {"max_still_seconds": 0.0}, {"max_still_seconds": float("nan")},
                                    {"max_still_share": -0.01}, {"max_still_share": 1.5},
                                    {"max_still_share": float("nan")}])
def test_bad_settings_are_refused(kwargs):
    with pytest.raises(ValueError):
        SceneGate(**kwargs)
    gate = SceneGate()
    with pytest.raises(ValueError):
        gate.configure(**kwargs)


@pytest.mark.parametrize("spacing", [10, 13])
def test_every_change_is_captioned_within_one_caption_interval(spacing):
    """The node's worker loop on a fake clock: a 10 Hz camera (stamps jittered by up to
    0.3 ms), max_rate 2 Hz, a view that changes every 1 s, or every 1.3 s (its phase
    against the caption interval then takes every value), a model caption that keeps the worker busy 0.15 s (frames arrive and wait
    meanwhile) and a republished caption that takes no time. Each change's first caption
    must be the model's, from a frame stamped less than one caption interval (0.5 s) after
    the change: the last frame taken before it is at least one input frame earlier."""
    frame_ns, interval_ns, model_ns = S // 10, S // 2, 15 * S // 100
    change_at = [spacing * k for k in range(1, 26)]  # frame indices where the view changes

    def view(i: int) -> int:
        return sum(i >= c for c in change_at)

    thumbs = [np.full((96, 128, 3), (37 * v) % 256, np.uint8) for v in range(len(change_at) + 1)]
    frames, scene = FrameGate(max_rate=1e9 / interval_ns), SceneGate(min_change=0.1)
    captions = []  # (frame index, reused)
    in_hand, busy_until = None, 0

    def work(item, now):
        verdict = scene.judge(thumbs[view(item.frame)], item.stamp_ns)
        captions.append((item.frame, verdict.still))
        if verdict.still:  # republished at once
            frames.done(item, captioned=True)
            return None, now
        scene.captioned(thumbs[view(item.frame)], item.stamp_ns)
        return item, now + model_ns

    last = change_at[-1] + 12
    for i in range(last):
        now = i * frame_ns + ((i * 7919) % 11 - 5) * 60_000  # as in test_frame_gate's jittered()
        while in_hand is not None and busy_until <= now:  # the model finished before this frame
            frames.done(in_hand, captioned=True)
            in_hand = None
            item = frames.take(timeout=0)
            if item is not None:
                in_hand, busy_until = work(item, busy_until)
        frames.offer(i, now)
        if in_hand is None:
            item = frames.take(timeout=0)
            if item is not None:
                in_hand, busy_until = work(item, now)
    for k, c in enumerate(change_at, start=1):
        first = next((frame, reused) for frame, reused in captions if view(frame) == k)
        assert not first[1], f"change {k}: its first caption was a republished one"
        assert (first[0] - c) * frame_ns < interval_ns, f"change {k} captioned {first[0] - c} frames late"
