"""The ways a caption is made, named once for evaluation and the benchmark: ``glance`` (the
first look only), ``deeplens`` (DeepLens refines it, no zoom) and ``zoom`` (DeepLens with
zoom crops of the attended regions). :data:`SWITCHES` are each mode's arguments to
``SharpEyes.caption`` / ``SharpEyes.finish``."""

from __future__ import annotations

GLANCE, DEEPLENS, ZOOM = MODES = ("glance", "deeplens", "zoom")
SWITCHES: dict[str, dict[str, bool]] = {
    GLANCE: {"refine": False, "zoom": False},
    DEEPLENS: {"refine": True, "zoom": False},
    ZOOM: {"refine": True, "zoom": True},
}
# How the evaluation report names them.
TITLES = {GLANCE: "glance", DEEPLENS: "refined, no zoom", ZOOM: "refined + zoom"}
