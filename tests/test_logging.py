"""The command lines and job workers print no transformers notice that reads like an error."""
import subprocess
import sys
import textwrap

from conftest import REPO

# transformers looks for PyTorch with importlib.util.find_spec; hiding it there recreates a machine without it
HIDE_TORCH = textwrap.dedent("""
    import importlib.util
    _find_spec = importlib.util.find_spec
    importlib.util.find_spec = lambda name, package=None: (
        None if name.split(".")[0] == "torch" else _find_spec(name, package))
""")


def _stderr_of(code: str, tmp_path) -> str:
    env = {"PYTHONPATH": f"{tmp_path}:{REPO}", "JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"}
    (tmp_path / "sitecustomize.py").write_text(HIDE_TORCH)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                          check=True).stderr


def test_configure_logging_silences_the_missing_pytorch_notice(tmp_path):
    load = "import transformers"
    assert "PyTorch was not found" in _stderr_of(load, tmp_path)  # what a user without PyTorch saw
    quiet = "from jaxdistill.config import configure_logging; configure_logging(); " + load
    assert "PyTorch was not found" not in _stderr_of(quiet, tmp_path)
