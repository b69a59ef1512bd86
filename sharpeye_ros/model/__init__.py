"""The Sharp-Eyes captioning model: pure PyTorch, no ROS.

from sharpeye_ros.model import SharpEyes
model = SharpEyes.from_pretrained(path)          # or SharpEyes.from_config(presets.tiny())
results = model.caption([rgb_uint8_image])       # list[CaptionResult]
"""

from sharpeye_ros.model.config import SharpEyesConfig
from sharpeye_ros.model.loading import CheckpointError, default_model_path
from sharpeye_ros.model.preprocess import ImageTransform
from sharpeye_ros.model.regions import Region
from sharpeye_ros.model.sharpeyes import CaptionResult, Glance, SharpEyes

__all__ = [
    "CaptionResult",
    "CheckpointError",
    "Glance",
    "ImageTransform",
    "Region",
    "SharpEyes",
    "SharpEyesConfig",
    "default_model_path",
]
