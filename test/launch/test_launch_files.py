"""Static checks of the launch files and the RViz config, for machines without ``ros2 launch``.

launch and launch_ros are not installable everywhere (not on PyPI), so these tests read the
files instead of running them: they compile, import only real launch API, declare the
documented arguments, start installed executables with parameters those nodes declare,
and point at files that exist. test_sharpeye_launch.py runs them where launch_pytest is.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
# Names the launch files import from sharpeye_ros.ros.launch_support for files in share/.
SHIPPED_NAMES = {"SHIPPED_PROFILE": "fastdds_large_shm.xml"}
LAUNCH = {"captioner": REPO / "launch" / "captioner.launch.py", "demo": REPO / "launch" / "demo.launch.py"}
DOCUMENTED = {
    "captioner": {"image_topic", "params_file", "model_path", "device", "max_rate", "use_sim_time",
                  "namespace", "image_transport", "log_level", "fastdds_profile"},
    # The demo declares every captioner argument itself too: each one applies to the camera
    # (and RViz) as well, or is only passed on.
    "demo": {"rviz", "image_transport", "model_path", "device", "max_rate", "image_topic", "namespace",
             "use_sim_time", "log_level", "params_file", "fastdds_profile"},
}
# Public names of launch / launch_ros that exist in Humble and Jazzy alike.
KNOWN_API = {
    "launch": {"LaunchDescription", "LaunchContext"},
    "launch.actions": {"DeclareLaunchArgument", "IncludeLaunchDescription", "OpaqueFunction", "GroupAction",
                       "LogInfo", "SetEnvironmentVariable", "ExecuteProcess", "TimerAction",
                       "RegisterEventHandler", "Shutdown"},
    "launch.event_handlers": {"OnProcessExit"},
    "launch.conditions": {"IfCondition", "UnlessCondition"},
    "launch.launch_description_sources": {"PythonLaunchDescriptionSource"},
    "launch.substitutions": {"LaunchConfiguration", "PathJoinSubstitution", "TextSubstitution",
                             "PythonExpression", "EnvironmentVariable"},
    "launch_ros.actions": {"Node", "PushRosNamespace", "SetParameter", "SetRemap"},
    "launch_ros.substitutions": {"FindPackageShare"},
}


def _tree(name: str) -> ast.Module:
    return ast.parse(LAUNCH[name].read_text(), filename=str(LAUNCH[name]))


def _module_dict(tree: ast.Module, name: str) -> dict[str, Any]:
    """A module-level ``NAME = {...}`` literal."""
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
            node, ast.AnnAssign) else []
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            return _literal(node.value)
    return {}


def _literal(node: ast.AST) -> Any:
    """ast.literal_eval, with computed parts (os.path.join(...)) as their source text."""
    try:
        return ast.literal_eval(node)
    except ValueError:
        if isinstance(node, ast.Dict):
            return {_literal(k): _literal(v) for k, v in zip(node.keys, node.values)}
        if isinstance(node, ast.Tuple):
            return tuple(_literal(e) for e in node.elts)
        return ast.unparse(node)


def _calls(tree: ast.AST, func: str) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)
            and isinstance(n.func, ast.Name) and n.func.id == func]


def _keyword(call: ast.Call, name: str) -> Any:
    value = next((k.value for k in call.keywords if k.arg == name), None)
    return ast.literal_eval(value) if isinstance(value, ast.Constant) else value


def declared_arguments(tree: ast.Module) -> set[str]:
    """Names declared with DeclareLaunchArgument: string literals, or keys of ARGUMENTS when
    the declarations loop over that dict."""
    names = set()
    for call in _calls(tree, "DeclareLaunchArgument"):
        first = call.args[0] if call.args else None
        if isinstance(first, ast.Constant):
            names.add(first.value)
        else:
            names.update(_module_dict(tree, "ARGUMENTS"))
    return names


def _cmake_executables() -> set[str]:
    return set(re.findall(r"^sharpeye_executable\((\w+) ", (REPO / "CMakeLists.txt").read_text(), re.M))


def _camera_parameters() -> dict[str, Any]:
    """The synthetic camera's parameters, name -> (default, description) (their module
    needs no rclpy)."""
    from sharpeye_ros.ros.camera_parameters import PARAMETERS

    return {spec.name: (spec.default, spec.description) for spec in PARAMETERS}


@pytest.mark.parametrize("name", sorted(LAUNCH))
def test_launch_file_compiles_and_uses_real_launch_api(name: str) -> None:
    source = LAUNCH[name].read_text()
    compile(source, str(LAUNCH[name]), "exec")
    tree = _tree(name)
    functions = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert "generate_launch_description" in functions
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module.split(".")[0] in ("launch", "launch_ros"):
            unknown = {a.name for a in node.names} - KNOWN_API.get(node.module, set())
            assert not unknown, f"{LAUNCH[name].name}: {node.module} has no {sorted(unknown)}"
        if isinstance(node, ast.Import):
            assert all(a.name.split(".")[0] not in ("launch", "launch_ros") for a in node.names)


@pytest.mark.parametrize("name", sorted(LAUNCH))
def test_launch_file_declares_its_documented_arguments(name: str) -> None:
    tree = _tree(name)
    declared = declared_arguments(tree)
    assert DOCUMENTED[name] <= declared, f"missing {sorted(DOCUMENTED[name] - declared)}"
    doc = ast.get_docstring(tree) or ""
    for argument in DOCUMENTED[name] - {"params_file", "namespace", "use_sim_time"}:
        assert argument in doc or argument in _module_dict(tree, "ARGUMENTS"), argument
    for call in _calls(tree, "LaunchConfiguration"):  # every literal use refers to a declared argument
        if call.args and isinstance(call.args[0], ast.Constant):
            assert call.args[0].value in declared, call.args[0].value
    arguments, choices = _module_dict(tree, "ARGUMENTS"), _module_dict(tree, "CHOICES")
    for argument, allowed in choices.items():
        assert argument in arguments and arguments[argument][0] in allowed, argument
    for argument, (default, description) in arguments.items():
        assert isinstance(default, str) and description.strip(), argument


@pytest.mark.parametrize("name", sorted(LAUNCH))
def test_launch_file_starts_installed_executables(name: str) -> None:
    executables = _cmake_executables()
    nodes = _calls(_tree(name), "Node")
    assert nodes
    for call in nodes:
        package, executable = _keyword(call, "package"), _keyword(call, "executable")
        if package == "sharpeye_ros":
            assert executable in executables, f"{executable} is not built by CMakeLists.txt"
        else:
            assert (package, executable) == ("rviz2", "rviz2")


def _share_paths(tree: ast.Module) -> list[Path]:
    """Files named as os.path.join(SHARE or get_package_share_directory(...), "dir", "file")
    in the package share (a literal or a module-level constant as the file)."""
    constants = {t.id: n.value.value for n in tree.body if isinstance(n, ast.Assign)
                 for t in n.targets if isinstance(t, ast.Name) and isinstance(n.value, ast.Constant)}
    constants.update(SHIPPED_NAMES)
    paths = []
    for call in ast.walk(tree):
        if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.func.attr == "join"):
            continue
        head, *rest = call.args
        if not (isinstance(head, ast.Name) and head.id == "SHARE" or isinstance(head, ast.Call)
                and getattr(head.func, "id", "") == "get_package_share_directory"):
            continue
        parts = [a.value if isinstance(a, ast.Constant) else constants.get(getattr(a, "id", ""))
                 for a in rest]
        if parts and all(isinstance(p, str) for p in parts):
            paths.append(Path(*parts))
    return paths


def test_launch_files_reference_files_that_are_installed() -> None:
    cmake = (REPO / "CMakeLists.txt").read_text()
    assert re.search(r"install\(DIRECTORY launch config DESTINATION share/\$\{PROJECT_NAME\}\)", cmake)
    referenced = {p for name in LAUNCH for p in _share_paths(_tree(name))}
    assert {Path("config/captioner.yaml"), Path("config/sharpeye.rviz"),
            Path("launch/captioner.launch.py"), Path("config/fastdds_large_shm.xml")} <= referenced
    for path in referenced:
        assert (REPO / path).is_file(), f"{path} is referenced by a launch file but missing"
    assert all('get_package_share_directory("sharpeye_ros")' in LAUNCH[n].read_text() for n in LAUNCH)


def test_launch_parameters_exist_on_the_nodes() -> None:
    from sharpeye_ros.ros.captioner_parameters import SPECS

    captioner_source = LAUNCH["captioner"].read_text()
    for parameter in ("image_transport", "model_path", "device", "max_rate", "use_sim_time"):
        assert f'"{parameter}"' in captioner_source
        assert parameter in SPECS or parameter == "use_sim_time"
    assert "from_launch_arguments(SPECS, " in captioner_source  # the node refuses an integer max_rate
    remaps = {ast.literal_eval(t.elts[0]) for t in ast.walk(_tree("captioner"))
              if isinstance(t, ast.Tuple) and len(t.elts) == 2 and isinstance(t.elts[0], ast.Constant)}
    # One remap: the node's <image>/compressed follows it (image_transport's convention).
    assert "image" in remaps and "image/compressed" not in remaps
    camera = _camera_parameters()
    demo = _tree("demo")
    assert any(_keyword(c, "executable") == "synthetic_camera" for c in _calls(demo, "Node"))
    used = {m for m in re.findall(r"['\"](\w+)['\"]", LAUNCH["demo"].read_text()) if m in camera}
    assert {"rate", "scene_period", "split", "start_index", "encoding", "publish_compressed"} <= used


def test_rviz_config_is_valid_and_shows_the_captioner_topics() -> None:
    config = yaml.safe_load((REPO / "config" / "sharpeye.rviz").read_text())
    assert {"Panels", "Visualization Manager", "Window Geometry"} <= set(config)
    manager = config["Visualization Manager"]
    camera = _camera_parameters()
    # The captioner stamps its markers with the camera's frame: the fixed frame needs no TF.
    assert manager["Global Options"]["Fixed Frame"] == camera["frame_id"][0] == "camera_optical_frame"
    displays = {d["Name"]: d for d in manager["Displays"]}
    assert len(displays) == len(manager["Displays"]), "display names must be unique"
    topics = {d["Class"]: [] for d in displays.values()}
    for display in displays.values():
        assert display["Class"].startswith("rviz_default_plugins/") and isinstance(display["Enabled"], bool)
        topic = display["Topic"]
        assert topic["Reliability Policy"] in ("Reliable", "Best Effort", "System Default")
        assert topic["Durability Policy"] in ("Volatile", "Transient Local", "System Default")
        assert topic["History Policy"] in ("Keep Last", "Keep All", "System Default")
        assert isinstance(topic["Depth"], int) and topic["Depth"] >= 1
        topics[display["Class"]].append((topic["Value"], display["Enabled"]))
    assert ("/caption_image", True) in topics["rviz_default_plugins/Image"]
    assert ("/caption_markers", True) in topics["rviz_default_plugins/MarkerArray"]
    node_source = (REPO / "sharpeye_ros" / "ros" / "captioner_node.py").read_text()
    assert '"caption_image"' in node_source and '"caption_markers"' in node_source
    for panel in config["Panels"]:
        assert panel["Class"].startswith("rviz_common/")
    assert manager["Views"]["Current"]["Class"].startswith("rviz_default_plugins/")


def test_params_file_applies_in_any_namespace() -> None:
    # captioner.launch.py namespace:=<ns> runs /<ns>/captioner; rcl applies a params file
    # section only to the node it names, so a bare "captioner:" key would silently be
    # ignored there. "/**/captioner" (or "/**") matches the node in every namespace.
    config = yaml.safe_load((REPO / "config" / "captioner.yaml").read_text())
    assert isinstance(config, dict) and config, "config/captioner.yaml holds no parameters"
    for key, section in config.items():
        assert key in ("/**/captioner", "/**"), \
            f"params file section {key!r} does not match a namespaced captioner"
        assert set(section) == {"ros__parameters"}
    from sharpeye_ros.ros.captioner_parameters import SPECS

    for section in config.values():
        assert set(section["ros__parameters"]) <= set(SPECS), "unknown captioner parameters"
