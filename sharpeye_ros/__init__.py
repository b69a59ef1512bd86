"""sharpeye_ros: a lightweight captioning specialist with sharp eyes, for ROS 2.

Subpackages, each with one job:

- ``sharpeye_ros.model``: the captioning model (CLIP vision encoder, MLP connector,
  OPT language model, DeepLens refinement, attended regions). Pure PyTorch, no ROS.
- ``sharpeye_ros.world``: the synthetic "visual blindness" world of shapes.
- ``sharpeye_ros.training`` and ``sharpeye_ros.evaluation``: training stages and metrics.
- ``sharpeye_ros.ros``: the ROS 2 nodes (rclpy), thin glue around the above.
- ``sharpeye_ros.benchmark``: speed, latency and memory measurements.

The generated message classes live in ``sharpeye_ros.msg`` once the package is built
with colcon; they are not part of the source tree.
"""

import pkgutil

# Run from the repository root, Python imports this source tree, which has no generated
# ``msg``: extending the package's path over every ``sharpeye_ros`` on sys.path lets the
# installed one (install/setup.bash) supply it, while the source's own modules come first.
__path__ = pkgutil.extend_path(__path__, __name__)

__version__ = "0.1.0"
