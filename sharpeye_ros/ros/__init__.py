"""The ROS 2 layer: nodes and the pure functions they use. Needs rclpy only where noted."""
