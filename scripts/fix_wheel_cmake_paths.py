"""Point the ROS wheels' CMake exports at this machine's Python and numpy headers.

Some ros-jazzy-* wheels were built in a manylinux container and their CMake export
files name that container's include directories (/opt/python/cp311-cp311/...). CMake
refuses to generate a build whose imported targets name missing include directories,
so building our messages would fail. Rewriting the paths inside the virtual
environment (rather than creating /opt/python on the host) needs no root and touches
nothing outside .venv. Running it again changes nothing.
"""

from __future__ import annotations

import re
import sys
import sysconfig
from pathlib import Path

import numpy

PYTHON_INCLUDE = re.compile(r"/opt/python/cp3\d+-cp3\d+/include/python3\.\d+")
NUMPY_INCLUDE = re.compile(r"/opt/python/cp3\d+-cp3\d+/lib/python3\.\d+/site-packages/numpy/_core/include")


def fix(prefix: Path) -> int:
    """Rewrite the build-machine include paths in every CMake file under prefix/share."""
    python_include = sysconfig.get_paths()["include"]
    numpy_include = numpy.get_include()
    changed = 0
    for path in (prefix / "share").rglob("*.cmake"):
        text = path.read_text()
        if "/opt/python/" not in text:
            continue
        new = NUMPY_INCLUDE.sub(numpy_include, text)
        new = PYTHON_INCLUDE.sub(python_include, new)
        if new != text:
            path.write_text(new)
            changed += 1
    return changed


if __name__ == "__main__":
    count = fix(Path(sys.prefix))
    print(f"fix_wheel_cmake_paths: rewrote {count} CMake file(s) under {Path(sys.prefix).name}/share")
