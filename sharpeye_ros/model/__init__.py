"""The Sharp-Eyes captioning model: pure PyTorch, no ROS."""
