"""The captioner as a lifecycle node, driven through its lifecycle services as a lifecycle
manager (or ``ros2 lifecycle set``) drives it: what is subscribed, published and allocated
in each state."""

from __future__ import annotations

import gc
import weakref

import pytest

rclpy = pytest.importorskip("rclpy")
pytestmark = pytest.mark.ros

from rclpy.parameter import Parameter  # noqa: E402

S = 1_000_000_000


class Lifecycle:
    """The captioner's lifecycle services, called from the harness's test node."""

    def __init__(self, h) -> None:
        from lifecycle_msgs.srv import ChangeState, GetState

        self.h = h
        base = f"{h.namespace}/captioner"
        self._change = h.node.create_client(ChangeState, f"{base}/change_state")
        self._get = h.node.create_client(GetState, f"{base}/get_state")
        for client in (self._change, self._get):
            assert client.wait_for_service(timeout_sec=10.0), client.srv_name

    def _call(self, client, request):
        future = client.call_async(request)
        assert self.h.wait_for(future.done, 60.0), f"no answer from {client.srv_name}"
        return future.result()

    def state(self) -> str:
        from lifecycle_msgs.srv import GetState

        return self._call(self._get, GetState.Request()).current_state.label

    def change(self, label: str) -> bool:
        """Request the transition named ``label`` (configure, activate, deactivate, cleanup,
        shutdown); True when it succeeded."""
        from lifecycle_msgs.srv import ChangeState

        request = ChangeState.Request()
        request.transition.label = label
        return self._call(self._change, request).success


def observed(h) -> dict:
    """What the rest of the graph sees of the captioner, and what it holds."""
    node = h.captioner
    return {"state": node.lifecycle_state,
            "image_subscribed": h.image_pub.get_subscription_count() > 0,
            "caption_publishers": h.node.count_publishers(f"{h.namespace}/caption"),
            "model_loaded": node.model is not None,
            "worker": node.worker_running}


def wait_graph(h, **expected) -> dict:
    """Wait until the graph shows ``expected`` (discovery takes a moment); the observation."""
    h.wait_for(lambda: all(observed(h)[k] == v for k, v in expected.items()), 10.0)
    return observed(h)


def diagnostics_of(h) -> list:
    name = h.captioner.diagnostic_name
    return [s for array in h.snapshot("diagnostics") for s in array.status if s.name == name]


@pytest.fixture
def managed(harness, tiny_model_dir):
    """A captioner started with autostart false (waiting for a manager), loading the tiny
    checkpoint itself, so that cleanup has a model of its own to free."""
    h = harness(None, {"autostart": False, "model_path": str(tiny_model_dir), "diagnostics_period": 0.1,
                       "max_rate": 100.0, "refine": False})
    return h, Lifecycle(h)


def test_every_transition_through_the_services(managed, tiny_model_dir, frame):
    h, lifecycle = managed
    assert lifecycle.state() == "unconfigured"
    assert wait_graph(h) == {"state": "unconfigured", "image_subscribed": False, "caption_publishers": 0,
                             "model_loaded": False, "worker": False}

    assert lifecycle.change("configure") and lifecycle.state() == "inactive"
    assert wait_graph(h, caption_publishers=1) == {
        "state": "inactive", "image_subscribed": False, "caption_publishers": 1, "model_loaded": True,
        "worker": True}
    model = weakref.ref(h.captioner.model)
    assert h.captioner.health_report().value("model_id") == str(tiny_model_dir)

    assert lifecycle.change("activate") and lifecycle.state() == "active"
    assert wait_graph(h, image_subscribed=True)["image_subscribed"]
    t0 = h.now_ns()
    h.publish_frame(t0)
    (caption,) = h.wait_captions(1)
    assert h.wait_for(lambda: diagnostics_of(h))
    assert dict((kv.key, kv.value) for kv in diagnostics_of(h)[-1].values)["lifecycle_state"] == "active"

    assert lifecycle.change("deactivate") and lifecycle.state() == "inactive"
    assert wait_graph(h, image_subscribed=False) == {
        "state": "inactive", "image_subscribed": False, "caption_publishers": 1, "model_loaded": True,
        "worker": True}
    assert h.captioner.model is model()  # kept: activating again is instant
    heard = len(diagnostics_of(h))
    h.image_pub.publish(h.image_msg(frame(), t0 + S))  # nobody subscribes: nothing comes back
    assert not h.wait_for(lambda: len(h.snapshot()) > 1 or len(diagnostics_of(h)) > heard + 1, 1.0)

    assert lifecycle.change("activate") and lifecycle.state() == "active"  # and back
    assert wait_graph(h, image_subscribed=True)["image_subscribed"]
    h.publish_frame(t0 + 2 * S)
    assert h.wait_captions(2)[1].model_id == caption.model_id
    assert lifecycle.change("deactivate")

    assert lifecycle.change("cleanup") and lifecycle.state() == "unconfigured"
    assert wait_graph(h, caption_publishers=0) == {
        "state": "unconfigured", "image_subscribed": False, "caption_publishers": 0, "model_loaded": False,
        "worker": False}
    gc.collect()
    assert model() is None  # the node held the last reference: the model's memory is freed

    assert lifecycle.change("configure") and lifecycle.change("activate")  # a second life
    h.publish_frame(t0 + 3 * S)
    assert len(h.wait_captions(3)) == 3
    assert lifecycle.change("shutdown") and lifecycle.state() == "finalized"
    assert wait_graph(h, image_subscribed=False, caption_publishers=0) == {
        "state": "finalized", "image_subscribed": False, "caption_publishers": 0, "model_loaded": False,
        "worker": False}
    assert h.captioner.finalized.is_set()


@pytest.mark.parametrize("path", [[], ["configure"], ["configure", "activate"]],
                         ids=["unconfigured", "inactive", "active"])
def test_shutdown_from_any_state_is_clean(managed, path, capfd):
    h, lifecycle = managed
    for label in path:
        assert lifecycle.change(label)
    assert lifecycle.change("shutdown") and lifecycle.state() == "finalized"
    assert wait_graph(h, image_subscribed=False, caption_publishers=0) == {
        "state": "finalized", "image_subscribed": False, "caption_publishers": 0, "model_loaded": False,
        "worker": False}
    assert not lifecycle.change("configure")  # finalized is final
    assert "Traceback" not in capfd.readouterr().err


def test_reload_parameters_change_only_while_unconfigured(managed, tiny_model_dir, tmp_path, capfd):
    import shutil

    h, lifecycle = managed
    other = tmp_path / "other_model"
    shutil.copytree(tiny_model_dir, other)
    node = h.captioner
    assert lifecycle.change("configure")
    for name, value in (("model_path", str(other)), ("device", "cpu"), ("dtype", "float32")):
        (result,) = node.set_parameters([Parameter(name, value=value)])
        assert not result.successful and "only change while the node is unconfigured" in result.reason, name
        assert "inactive" in result.reason
    assert node.settings.model_path == str(tiny_model_dir)
    (result,) = node.set_parameters([Parameter("max_rate", value=5.0)])  # others still change
    assert result.successful

    assert lifecycle.change("cleanup")
    results = node.set_parameters([Parameter("model_path", value=str(other)), Parameter("device", value="cpu"),
                                   Parameter("dtype", value="bfloat16")])
    assert all(r.successful for r in results), [r.reason for r in results]
    assert lifecycle.change("configure")
    report = node.health_report()
    assert (report.value("model_id"), report.value("dtype")) == (str(other), "bfloat16")  # loaded anew

    # A model that does not load: configure fails with the reason, the node stays unconfigured.
    assert lifecycle.change("cleanup")
    node.set_parameters([Parameter("model_path", value=str(tmp_path / "missing"))])
    capfd.readouterr()
    assert not lifecycle.change("configure") and lifecycle.state() == "unconfigured"
    err = capfd.readouterr().err
    assert "configure failed: cannot load model" in err and "no such model directory" in err, err
    assert node.model is None
    node.set_parameters([Parameter("model_path", value=str(other))])
    assert lifecycle.change("configure") and lifecycle.state() == "inactive"


def test_cleanup_returns_cuda_memory(harness, scripted_model, monkeypatch):
    """The CPU-only machines cannot allocate CUDA memory: the node's model claims a CUDA
    device, and cleanup must hand the cache back (torch.cuda.empty_cache) after dropping it."""
    import torch

    from sharpeye_ros.ros import captioner_node

    emptied = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(h.captioner.model))
    scripted_model.device = torch.device("cuda:0")
    h = harness(scripted_model, {"autostart": False})
    lifecycle = Lifecycle(h)
    assert lifecycle.change("configure") and h.captioner.health_report().value("device") == "cuda:0"
    assert lifecycle.change("activate") and lifecycle.change("deactivate")
    assert emptied == []
    assert lifecycle.change("cleanup")
    assert emptied == [None]  # once, after the model was dropped
    assert captioner_node.release_model("cpu") is False and emptied == [None]  # never on a CPU


def test_autostart_true_is_a_plain_node(harness, scripted_model):
    h = harness(scripted_model)  # autostart: the default
    assert Lifecycle(h).state() == "active"
    assert wait_graph(h, image_subscribed=True)["image_subscribed"]
    h.publish_frame(h.now_ns())
    assert h.wait_captions(1)
