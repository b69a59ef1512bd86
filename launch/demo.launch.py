"""Demo: the synthetic camera feeding the captioner, optionally with RViz.

    ros2 launch sharpeye_ros demo.launch.py                  # camera + captioner
    ros2 launch sharpeye_ros demo.launch.py rviz:=true       # ... and RViz (config/sharpeye.rviz)
    ros2 launch sharpeye_ros demo.launch.py image_transport:=compressed model_path:=/path/to/model
    ros2 launch sharpeye_ros demo.launch.py namespace:=robot1 image_topic:=front/image_raw

The camera publishes on ``image_topic`` (and its /compressed sibling when the captioner
subscribes compressed); the captioner is started through captioner.launch.py. Every
argument applies to every node it concerns: ``namespace``, ``use_sim_time`` and
``log_level`` (our nodes' loggers only) to the camera and the captioner, and RViz shows
the topics they use there. Both nodes get ``fastdds_profile`` (the shipped shared-memory
profile: with Fast DDS's defaults most 640x480 frames are lost), unless
FASTRTPS_DEFAULT_PROFILES_FILE or FASTDDS_DEFAULT_PROFILES_FILE is already set. RViz is
optional: rviz:=true without it installed stops before anything starts, saying how to get
it. When a node exits by itself, the whole demo ends (non-zero on a failure).
"""

import os
import tempfile

from ament_index_python.packages import PackageNotFoundError, get_package_prefix, get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription, OpaqueFunction, RegisterEventHandler
from launch.event_handlers import OnProcessExit
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from sharpeye_ros.ros.camera_parameters import SPECS as CAMERA_SPECS
from sharpeye_ros.ros.launch_support import (SHIPPED_PROFILE, log_level_arguments, logger_name,
                                             normalize_namespace, on_node_exit, parse_bool,
                                             profile_environment, rviz_config, rviz_missing_message)
from sharpeye_ros.ros.parameters import from_launch_arguments

SHARE = get_package_share_directory("sharpeye_ros")
CAMERA = "synthetic_camera"
# Passed on to captioner.launch.py (declared here too, so that they apply to the camera as well).
CAPTIONER_ARGUMENTS = ("image_topic", "namespace", "use_sim_time", "log_level", "image_transport",
                       "model_path", "device", "max_rate", "params_file", "fastdds_profile")
ARGUMENTS = {
    "rviz": ("false", "start RViz with config/sharpeye.rviz (needs rviz2 installed)"),
    "image_topic": ("/camera/image_raw", "camera topic; relative names go under namespace"),
    "namespace": ("", "namespace of the camera and the captioner (RViz follows)"),
    "use_sim_time": ("false", "camera, captioner and RViz on /clock"),
    "log_level": ("info", "log level of the camera's and the captioner's own loggers"),
    "image_transport": ("raw", "raw or compressed: what the captioner subscribes to"),
    "model_path": ("", "captioner checkpoint directory; empty: the shipped demo model"),
    "device": ("", "captioner device (auto, cpu, cuda, cuda:N); empty: as in the params file"),
    "max_rate": ("", "maximum captions per second; empty: as in the params file"),
    "params_file": (os.path.join(SHARE, "config", "captioner.yaml"), "parameters file of the captioner"),
    "fastdds_profile": (os.path.join(SHARE, "config", SHIPPED_PROFILE),
                        "Fast DDS profiles file for all nodes; ignored when FASTRTPS_DEFAULT_PROFILES_FILE "
                        "is set; empty: Fast DDS defaults"),
    "rate": ("5.0", "camera frames per second"),
    "scene_period": ("5.0", "seconds each synthetic scene is shown"),
    "split": ("test", "synthetic-world split the camera shows"),
    "start_index": ("0", "first scene index"),
    "encoding": ("rgb8", "camera image encoding"),
}
CHOICES = {
    "rviz": ["true", "false", "True", "False"],
    "use_sim_time": ["true", "false", "True", "False"],
    "log_level": ["debug", "info", "warn", "error", "fatal"],
    "image_transport": ["raw", "compressed"],
    "split": ["train", "val", "test", "small"],
}


def _rviz_installed() -> bool:
    try:
        get_package_prefix("rviz2")
        return True
    except PackageNotFoundError:
        return False


def _demo(context, *args, **kwargs):
    """Camera, captioner and RViz, built once the arguments are known."""
    value = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
    rviz = parse_bool("rviz", value["rviz"])
    if rviz and not _rviz_installed():  # before anything starts: nothing is left orphaned
        raise RuntimeError(rviz_missing_message(os.environ.get("ROS_DISTRO")))
    sim_time = parse_bool("use_sim_time", value["use_sim_time"])
    namespace = normalize_namespace(value["namespace"])
    topic = value["image_topic"].rstrip("/")
    env = profile_environment(os.environ, value["fastdds_profile"])
    params = from_launch_arguments(CAMERA_SPECS, {  # typed and checked as the camera takes them
        "rate": value["rate"],
        "scene_period": value["scene_period"],
        "start_index": value["start_index"],
        "split": value["split"],
        "encoding": value["encoding"],
    })
    params.update({"publish_compressed": value["image_transport"] == "compressed", "use_sim_time": sim_time})
    camera = Node(
        package="sharpeye_ros",
        executable="synthetic_camera",
        name=CAMERA,
        namespace=namespace,
        output="screen",
        emulate_tty=True,
        parameters=[params],
        remappings=[("image", topic)],  # its JPEG stream follows: <image>/compressed
        ros_arguments=log_level_arguments(value["log_level"], [logger_name(namespace, CAMERA)]),
        additional_env=env,
    )
    captioner = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(os.path.join(SHARE, "launch", "captioner.launch.py")),
        launch_arguments={name: value[name] for name in CAPTIONER_ARGUMENTS}.items(),
    )
    actions = [camera, RegisterEventHandler(OnProcessExit(target_action=camera, on_exit=on_node_exit)),
               captioner]
    if rviz:
        with open(os.path.join(SHARE, "config", "sharpeye.rviz")) as f:
            text = rviz_config(f.read(), namespace, topic)
        with tempfile.NamedTemporaryFile("w", prefix="sharpeye_demo_", suffix=".rviz", delete=False) as f:
            f.write(text)
        viewer = Node(package="rviz2", executable="rviz2", name="rviz2", arguments=["-d", f.name],
                      parameters=[{"use_sim_time": sim_time}], additional_env=env)
        # Closing RViz ends the demo.
        actions += [viewer, RegisterEventHandler(OnProcessExit(target_action=viewer, on_exit=on_node_exit))]
    return actions


def generate_launch_description():
    """The demo's launch arguments; the nodes come from _demo once they are known."""
    declared = [DeclareLaunchArgument(name, default_value=default, description=text,
                                      **({"choices": CHOICES[name]} if name in CHOICES else {}))
                for name, (default, text) in ARGUMENTS.items()]
    return LaunchDescription(declared + [OpaqueFunction(function=_demo)])
