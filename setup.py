"""pip packaging for the ROS-free part of sharpeye_ros.

The ROS 2 package itself is built by colcon through CMakeLists.txt (it has messages,
so it is ament_cmake). This file lets a machine without ROS -- a training box, a
laptop -- ``pip install .`` the model library, the synthetic world, training,
evaluation and the benchmark tools, with their command-line entry points. The
``sharpeye_ros.ros`` layer needs rclpy and is left out.
"""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["sharpeye_ros", "sharpeye_ros.*"], exclude=["sharpeye_ros.ros", "sharpeye_ros.ros.*"]),
)
