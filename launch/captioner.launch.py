"""Start the sharpeye_ros captioner on a camera topic.

    ros2 launch sharpeye_ros captioner.launch.py image_topic:=/camera/image_raw
    ros2 launch sharpeye_ros captioner.launch.py image_topic:=/cam/image_raw \\
        image_transport:=compressed model_path:=/path/to/checkpoint device:=cuda max_rate:=1.0

The node reads ``params_file`` (default: the installed config/captioner.yaml); the
arguments model_path, device, max_rate and image_transport override it only when given
(empty = keep the file's value). ``image`` is remapped to ``image_topic`` and
``image/compressed`` to ``image_topic``/compressed, the image_transport convention.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

# name -> (default, description); an empty default means "as in params_file".
ARGUMENTS = {
    "image_topic": ("/camera/image_raw", "sensor_msgs/Image topic to caption (its /compressed "
                    "sibling with image_transport:=compressed)"),
    "image_transport": ("", "raw or compressed; empty: as in params_file"),
    "model_path": ("", "checkpoint directory; empty: as in params_file (there empty means the "
                   "shipped demo model)"),
    "device": ("", "auto, cpu, cuda or cuda:N; empty: as in params_file"),
    "max_rate": ("", "maximum captions per second, on message time; empty: as in params_file"),
    "use_sim_time": ("false", "use /clock (for rosbag playback with --clock)"),
    "namespace": ("", "namespace of the captioner node and its topics"),
    "log_level": ("info", "debug, info, warn, error or fatal"),
}
CHOICES = {
    "image_transport": ["", "raw", "compressed"],
    "use_sim_time": ["true", "false", "True", "False"],
    "log_level": ["debug", "info", "warn", "error", "fatal"],
}


def _captioner(context, *args, **kwargs):
    """Build the Node once the arguments are known, passing only the overrides that were given."""
    value = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
    overrides = {"use_sim_time": value["use_sim_time"].lower() == "true"}
    for name in ("image_transport", "model_path", "device"):
        if value[name]:
            overrides[name] = value[name]
    if value["max_rate"]:
        try:  # the node wants a double: "1" must arrive as 1.0
            overrides["max_rate"] = float(value["max_rate"])
        except ValueError:
            raise ValueError(f"launch argument max_rate must be a number, got {value['max_rate']!r}") \
                from None
    topic = value["image_topic"].rstrip("/")
    if not topic:
        raise ValueError("launch argument image_topic must not be empty")
    return [Node(
        package="sharpeye_ros",
        executable="captioner",
        name="captioner",
        namespace=value["namespace"],
        output="screen",
        emulate_tty=True,
        parameters=[LaunchConfiguration("params_file").perform(context), overrides],
        remappings=[("image", topic), ("image/compressed", topic + "/compressed")],
        ros_arguments=["--log-level", value["log_level"]],
    )]


def generate_launch_description():
    """The captioner's launch arguments and the node."""
    declared = [DeclareLaunchArgument(name, default_value=default, description=text,
                                      **({"choices": CHOICES[name]} if name in CHOICES else {}))
                for name, (default, text) in ARGUMENTS.items()]
    declared.append(DeclareLaunchArgument(
        "params_file",
        default_value=PathJoinSubstitution([FindPackageShare("sharpeye_ros"), "config", "captioner.yaml"]),
        description="parameters file of the captioner node"))
    return LaunchDescription(declared + [OpaqueFunction(function=_captioner)])
