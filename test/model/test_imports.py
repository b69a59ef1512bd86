"""Importing the model stays quiet when optional libraries that transformers finds are installed."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

# A stand-in for torchao 0.18 as transformers sees it: a version in its metadata, any
# submodule and name importable, and the warnings the real one logs while it loads.
_FAKE_TORCHAO = '''
import importlib.abc, importlib.machinery, logging, sys, types

class _Anything(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return type(name, (), {})

class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path, target=None):
        if name.startswith("torchao."):
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _Anything(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module):
        pass

sys.meta_path.insert(0, _Finder())
__version__ = "0.18.0"
__getattr__ = _Anything.__getattr__.__get__(sys.modules[__name__])
logging.getLogger("torchao").warning("FAKE-TORCHAO Failed to load _C_mxfp8.so")
logging.getLogger("torch.utils._pytree").warning("FAKE-TORCHAO <enum 'KernelPreference'> is an Enum subclass")
'''

_IMPORT = textwrap.dedent("""
    import logging, sys
    import sharpeye_ros.model
    print("torchao imported:", "torchao" in sys.modules)
    print("levels:", logging.getLogger("torchao").level, logging.getLogger("torch.utils._pytree").level)
""")


def test_model_import_hides_torchao_start_up_warnings_and_restores_its_loggers(tmp_path: Path):
    (tmp_path / "torchao").mkdir()
    (tmp_path / "torchao" / "__init__.py").write_text(_FAKE_TORCHAO)
    meta = tmp_path / "torchao-0.18.0.dist-info"
    meta.mkdir()
    (meta / "METADATA").write_text("Metadata-Version: 2.1\nName: torchao\nVersion: 0.18.0\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    run = subprocess.run([sys.executable, "-c", _IMPORT], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "torchao imported: True" in run.stdout, (run.stdout, run.stderr[-2000:])  # transformers loaded the stand-in
    assert "FAKE-TORCHAO" not in run.stderr, run.stderr[-2000:]
    assert "levels: 0 0" in run.stdout  # later warnings from these loggers still show
