"""Demo: the synthetic camera feeding the captioner, optionally with RViz.

    ros2 launch sharpeye_ros demo.launch.py                  # camera + captioner
    ros2 launch sharpeye_ros demo.launch.py rviz:=true       # ... and RViz (config/sharpeye.rviz)
    ros2 launch sharpeye_ros demo.launch.py image_transport:=compressed model_path:=/path/to/model

The camera publishes on /camera/image_raw (and /camera/image_raw/compressed when the
captioner subscribes compressed); the captioner is started through captioner.launch.py.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription, OpaqueFunction
from launch.conditions import IfCondition
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

IMAGE_TOPIC = "/camera/image_raw"
ARGUMENTS = {
    "rviz": ("false", "start RViz with config/sharpeye.rviz"),
    "image_transport": ("raw", "raw or compressed: what the captioner subscribes to"),
    "model_path": ("", "captioner checkpoint directory; empty: the shipped demo model"),
    "device": ("", "captioner device (auto, cpu, cuda, cuda:N); empty: as in the params file"),
    "max_rate": ("", "maximum captions per second; empty: as in the params file"),
    "rate": ("5.0", "camera frames per second"),
    "scene_period": ("5.0", "seconds each synthetic scene is shown"),
    "split": ("test", "synthetic-world split the camera shows"),
    "start_index": ("0", "first scene index"),
    "encoding": ("rgb8", "camera image encoding"),
}
CHOICES = {
    "rviz": ["true", "false", "True", "False"],
    "image_transport": ["raw", "compressed"],
    "split": ["train", "val", "test", "small"],
}


def _camera(context, *args, **kwargs):
    """The synthetic camera; JPEG is published only when the captioner asks for compressed."""
    value = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
    try:
        params = {
            "rate": float(value["rate"]),
            "scene_period": float(value["scene_period"]),
            "start_index": int(value["start_index"]),
            "split": value["split"],
            "encoding": value["encoding"],
            "publish_compressed": value["image_transport"] == "compressed",
        }
    except ValueError as err:
        raise ValueError(f"launch arguments rate/scene_period must be numbers and start_index an "
                         f"integer ({err})") from None
    return [Node(
        package="sharpeye_ros",
        executable="synthetic_camera",
        name="synthetic_camera",
        output="screen",
        emulate_tty=True,
        parameters=[params],
        remappings=[("image", IMAGE_TOPIC), ("image/compressed", IMAGE_TOPIC + "/compressed")],
    )]


def generate_launch_description():
    """Camera, captioner (via captioner.launch.py) and, with rviz:=true, RViz."""
    share = FindPackageShare("sharpeye_ros")
    declared = [DeclareLaunchArgument(name, default_value=default, description=text,
                                      **({"choices": CHOICES[name]} if name in CHOICES else {}))
                for name, (default, text) in ARGUMENTS.items()]
    captioner = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(PathJoinSubstitution([share, "launch", "captioner.launch.py"])),
        launch_arguments={
            "image_topic": IMAGE_TOPIC,
            "image_transport": LaunchConfiguration("image_transport"),
            "model_path": LaunchConfiguration("model_path"),
            "device": LaunchConfiguration("device"),
            "max_rate": LaunchConfiguration("max_rate"),
        }.items(),
    )
    rviz = Node(
        package="rviz2",
        executable="rviz2",
        name="rviz2",
        arguments=["-d", PathJoinSubstitution([share, "config", "sharpeye.rviz"])],
        condition=IfCondition(LaunchConfiguration("rviz")),
    )
    return LaunchDescription(declared + [OpaqueFunction(function=_camera), captioner, rviz])
