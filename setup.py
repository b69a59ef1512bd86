"""pip packaging of sharpeye_ros for machines without ROS.

The ROS 2 package itself is built by colcon through CMakeLists.txt (it has messages, so
it is ament_cmake). This file lets a machine without ROS -- a training box, a laptop --
``pip install .`` the model library, the synthetic world, training, evaluation and the
benchmark, with their command-line entry points. The node modules in ``sharpeye_ros.ros``
are included but need rclpy and the built messages, i.e. a ROS 2 install; their pure
helpers (image conversion, drawing, rosbag recording) do not.
"""

from setuptools import find_packages, setup

setup(packages=find_packages(include=["sharpeye_ros", "sharpeye_ros.*"]))
