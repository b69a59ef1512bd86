"""Start the sharpeye_ros captioner on a camera topic.

    ros2 launch sharpeye_ros captioner.launch.py image_topic:=/camera/image_raw
    ros2 launch sharpeye_ros captioner.launch.py image_topic:=/cam/image_raw \\
        image_transport:=compressed model_path:=/path/to/checkpoint device:=cuda max_rate:=1.0

The node reads ``params_file`` (default: the installed config/captioner.yaml); the
arguments model_path, device, max_rate and image_transport override it only when given
(empty = keep the file's value). ``image`` is remapped to ``image_topic``; with
image_transport:=compressed the node subscribes ``image_topic``/compressed, the
image_transport convention. ``log_level`` applies to the captioner's logger only.
``fastdds_profile``: a Fast DDS XML profiles file for the node (e.g. the shipped
config/fastdds_large_shm.xml; give the camera driver the same one), unless
FASTRTPS_DEFAULT_PROFILES_FILE or FASTDDS_DEFAULT_PROFILES_FILE is already set.
When the captioner exits by itself (a bad model_path, no CUDA), the launch ends, non-zero
on a failure.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, RegisterEventHandler
from launch.event_handlers import OnProcessExit
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from sharpeye_ros.ros.captioner_parameters import SPECS
from sharpeye_ros.ros.launch_support import (log_level_arguments, logger_name, normalize_namespace,
                                             on_node_exit, parse_bool, profile_environment)
from sharpeye_ros.ros.parameters import from_launch_arguments

NODE = "captioner"
# name -> (default, description); an empty default means "as in params_file".
ARGUMENTS = {
    "image_topic": ("/camera/image_raw", "sensor_msgs/Image topic to caption (its /compressed "
                    "sibling with image_transport:=compressed); relative names go under namespace"),
    "image_transport": ("", "raw or compressed; empty: as in params_file"),
    "model_path": ("", "checkpoint directory; empty: as in params_file (there empty means the "
                   "shipped demo model)"),
    "device": ("", "auto, cpu, cuda or cuda:N; empty: as in params_file"),
    "max_rate": ("", "maximum captions per second, on message time; empty: as in params_file"),
    "use_sim_time": ("false", "use /clock (for rosbag playback with --clock)"),
    "namespace": ("", "namespace of the captioner node and its topics"),
    "log_level": ("info", "log level of the captioner's own logger"),
    "fastdds_profile": ("", "Fast DDS profiles file for the node; empty, or when "
                        "FASTRTPS_DEFAULT_PROFILES_FILE is set: the environment's"),
}
CHOICES = {
    "use_sim_time": ["true", "false", "True", "False"],
    "log_level": ["debug", "info", "warn", "error", "fatal"],
}


def _captioner(context, *args, **kwargs):
    """Build the Node once the arguments are known, passing only the overrides that were given."""
    value = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
    overrides = {"use_sim_time": parse_bool("use_sim_time", value["use_sim_time"])}
    given = {name: value[name] for name in ("image_transport", "model_path", "device", "max_rate")}
    # Typed and checked as the node takes them ("1" -> 1.0: it refuses an integer max_rate).
    overrides.update(from_launch_arguments(SPECS, given))
    topic = value["image_topic"].rstrip("/")
    if not topic:
        raise ValueError("launch argument image_topic must not be empty")
    namespace = normalize_namespace(value["namespace"])
    node = Node(
        package="sharpeye_ros",
        executable="captioner",
        name=NODE,
        namespace=namespace,
        output="screen",
        emulate_tty=True,
        parameters=[LaunchConfiguration("params_file").perform(context), overrides],
        # One remap serves both transports: the node subscribes <resolved image>/compressed
        # for compressed input (image_transport's convention).
        remappings=[("image", topic)],
        ros_arguments=log_level_arguments(value["log_level"], [logger_name(namespace, NODE)]),
        additional_env=profile_environment(os.environ, value["fastdds_profile"]),
    )
    return [node, RegisterEventHandler(OnProcessExit(target_action=node, on_exit=on_node_exit))]


def generate_launch_description():
    """The captioner's launch arguments and the node."""
    declared = [DeclareLaunchArgument(name, default_value=default, description=text,
                                      **({"choices": CHOICES[name]} if name in CHOICES else {}))
                for name, (default, text) in ARGUMENTS.items()]
    declared.append(DeclareLaunchArgument(
        "params_file",
        # A plain path, so that `--show-args` prints it as one.
        default_value=os.path.join(get_package_share_directory("sharpeye_ros"), "config", "captioner.yaml"),
        description="parameters file of the captioner node"))
    return LaunchDescription(declared + [OpaqueFunction(function=_captioner)])
