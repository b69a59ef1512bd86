"""``python -m sharpeye_ros.world``: render world splits to disk."""

import sys

from sharpeye_ros.world.dataset import main

sys.exit(main())
