"""The running node skips the model while the view is still: still, changing and
small-change scenes of the synthetic world, republish and skip, max_still_seconds, and the
diagnostics' counts (the gate's own decisions: test_scene_gate.py)."""

from __future__ import annotations

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
pytestmark = pytest.mark.ros

from rclpy.parameter import Parameter  # noqa: E402

S = 1_000_000_000
HALF = S // 2  # the default max_rate (2 Hz) lets a frame through every 0.5 s of stamps


def stamp_of(msg) -> int:
    return msg.header.stamp.sec * S + msg.header.stamp.nanosec


@pytest.fixture
def gated(harness, scripted_model):
    """``gated(**params)`` -> a harness whose node gates at the default min_scene_change."""
    from sharpeye_ros.ros.captioner_parameters import SPECS

    def make(**params):
        return harness(scripted_model, {"min_scene_change": SPECS["min_scene_change"].default, **params})
    return make


def noisy(image: np.ndarray, seed: int) -> np.ndarray:
    """The next frame of a still camera: the same view with fresh sensor noise."""
    from sharpeye_ros.world import add_sensor_noise

    return add_sensor_noise(image, 8.0, np.random.default_rng(seed))


def send(h, rgb: np.ndarray, stamp: int, captions: int) -> list:
    """Publish a frame and wait until ``captions`` captions arrived in total."""
    h.publish(h.image_msg(rgb, stamp))
    return h.wait_captions(captions)


def test_a_still_view_republishes_the_last_caption_without_the_model(gated, scripted_model):
    from sharpeye_ros.world import scene_change

    view = scene_change("test", 0, "new_object").before
    h = gated()
    t0 = h.now_ns()
    for k in range(4):
        captions = send(h, noisy(view, k), t0 + k * HALF, k + 1)
    assert len(scripted_model.calls) == 1  # the model ran for the first frame only
    first, *reused = captions
    assert not first.reused and all(c.reused for c in reused)
    assert [stamp_of(c) for c in captions] == [t0 + k * HALF for k in range(4)]  # each frame's own header
    for c in reused:
        assert (c.caption, c.regions, c.model_id) == (first.caption, first.regions, first.model_id)
    report = h.captioner.health_report()
    assert (report.value("frames_captioned"), report.value("frames_still_reused"),
            report.value("frames_still_skipped")) == ("1", "3", "0")
    assert float(report.value("scene_change_last")) < 0.1
    assert "the view is still" in report.message


def test_on_still_skip_publishes_nothing_and_counts(gated, scripted_model):
    from sharpeye_ros.world import scene_change

    view = scene_change("test", 1, "new_object").before
    h = gated(on_still="skip")
    t0 = h.now_ns()
    send(h, noisy(view, 0), t0, 1)
    for k in range(1, 4):
        h.publish(h.image_msg(noisy(view, k), t0 + k * HALF))
        assert h.wait_for(lambda: h.captioner.health_report().value("frames_still_skipped") == str(k))
    assert len(h.snapshot()) == 1 and len(scripted_model.calls) == 1
    assert h.captioner.health_report().value("frames_still_reused") == "0"


@pytest.mark.parametrize("kind", ["new_object", "moved_object", "small_object"])
def test_every_change_of_the_world_is_captioned_by_the_model(gated, scripted_model, kind):
    from sharpeye_ros.world import scene_change

    h = gated()
    t0 = h.now_ns()
    for index in range(2):
        change = scene_change("test", 10 + index, kind)
        base = 3 * index  # three frames per scene: before, before again, after
        send(h, noisy(change.before, base), t0 + base * HALF, base + 1)
        send(h, noisy(change.before, base + 1), t0 + (base + 1) * HALF, base + 2)
        captions = send(h, noisy(change.after, base + 2), t0 + (base + 2) * HALF, base + 3)
        assert [c.reused for c in captions[base:]] == [False, True, False], kind  # the change: the model's
        assert len(scripted_model.calls) == 2 * index + 2


def test_max_still_seconds_captions_a_still_view_again(gated, scripted_model):
    from sharpeye_ros.world import scene_change

    view = scene_change("test", 2, "new_object").before
    h = gated(max_still_seconds=1.0, max_still_share=0.0)  # 0: however long the caption took
    t0 = h.now_ns()
    captions = [send(h, noisy(view, k), t0 + k * HALF, k + 1)[-1] for k in range(5)]
    # stamps 0, 0.5, 1.0, 1.5, 2.0 s: the model at 0, at 1.0 (1 s still) and at 2.0
    assert [c.reused for c in captions] == [False, True, False, True, False]
    assert len(scripted_model.calls) == 3


def test_a_slow_model_stretches_the_still_period_and_diagnostics_say_so(gated, scripted_model):
    from sharpeye_ros.world import scene_change

    view = scene_change("test", 2, "new_object").before
    # Each caption takes at least 0.1 s: at max_still_share 0.01 the period is at least 10 s,
    # however slow the machine, so max_still_seconds 1 s no longer forces a caption.
    scripted_model.delay = 0.1
    h = gated(max_still_seconds=1.0, max_still_share=0.01)
    t0 = h.now_ns()
    captions = [send(h, noisy(view, k), t0 + k * HALF, k + 1)[-1] for k in range(5)]
    assert [c.reused for c in captions] == [False, True, True, True, True]
    report = h.captioner.health_report()
    model_last, period = float(report.value("model_last_s")), float(report.value("still_period_s"))
    assert model_last >= 0.1 and period == pytest.approx(model_last / 0.01, abs=0.1)
    assert report.value("max_still_share") == "0.01" and report.value("max_still_seconds") == "1"
    # Off at run time: max_still_seconds again, and the still view (2.5 s old) is captioned.
    assert h.captioner.set_parameters([Parameter("max_still_share", value=0.0)])[0].successful
    assert h.captioner.health_report().value("still_period_s") == "1.000"
    assert not send(h, noisy(view, 5), t0 + 5 * HALF, 6)[-1].reused
    refused = h.captioner.set_parameters([Parameter("max_still_share", value=2.0)])[0]
    assert not refused.successful and "max_still_share" in refused.reason
    assert len(scripted_model.calls) == 2


def test_gating_off_and_caption_parameters_make_the_model_run(gated, scripted_model):
    from sharpeye_ros.world import scene_change

    view = scene_change("test", 3, "new_object").before
    h = gated()
    t0 = h.now_ns()
    send(h, noisy(view, 0), t0, 1)
    assert send(h, noisy(view, 1), t0 + HALF, 2)[-1].reused
    # A parameter that changes what a caption says: the stored one is stale.
    assert h.captioner.set_parameters([Parameter("task", value="detailed")])[0].successful
    assert not send(h, noisy(view, 2), t0 + 2 * HALF, 3)[-1].reused
    assert send(h, noisy(view, 3), t0 + 3 * HALF, 4)[-1].reused
    assert h.captioner.set_parameters([Parameter("min_scene_change", value=0.0)])[0].successful  # off
    assert not send(h, noisy(view, 4), t0 + 4 * HALF, 5)[-1].reused
    assert not send(h, noisy(view, 5), t0 + 5 * HALF, 6)[-1].reused
    assert len(scripted_model.calls) == 4


def test_a_reused_caption_feeds_the_mirrors_too(gated, scripted_model):
    from sharpeye_ros.world import scene_change

    view = scene_change("test", 4, "new_object").before
    h = gated()
    h.subscribe("caption_text", depth=10)
    h.subscribe("detections", depth=10)
    t0 = h.now_ns()
    send(h, noisy(view, 0), t0, 1)
    captions = send(h, noisy(view, 1), t0 + HALF, 2)
    assert captions[1].reused
    assert h.wait_for(lambda: len(h.snapshot("caption_text")) == 2 and len(h.snapshot("detections")) == 2)
    assert [t.data for t in h.snapshot("caption_text")] == [c.caption for c in captions]
    assert [d.header for d in h.snapshot("detections")] == [c.header for c in captions]
