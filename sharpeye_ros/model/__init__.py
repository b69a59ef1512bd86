"""The Sharp-Eyes captioning model: pure PyTorch, no ROS.

from sharpeye_ros.model import SharpEyes
model = SharpEyes.from_pretrained(path)          # or SharpEyes.from_config(presets.tiny())
results = model.caption([rgb_uint8_image])       # list[CaptionResult]: glance() then finish()

Where each piece lives: docs/model.md.
"""

from sharpeye_ros.model.imports import import_transformers

import_transformers()  # first: quiet the optional libraries transformers imports (model/imports.py)

from sharpeye_ros.model.config import SharpEyesConfig
from sharpeye_ros.model.loading import CheckpointError, default_model_path
from sharpeye_ros.model.outputs import CaptionResult, Encoded, Glance, TeacherForced
from sharpeye_ros.model.preprocess import ImageTransform
from sharpeye_ros.model.regions import Region
from sharpeye_ros.model.sharpeyes import SharpEyes

__all__ = [
    "CaptionResult",
    "CheckpointError",
    "Encoded",
    "Glance",
    "ImageTransform",
    "Region",
    "SharpEyes",
    "SharpEyesConfig",
    "TeacherForced",
    "default_model_path",
]
