"""Shared test set-up.

Eight host CPU devices are forced before JAX is imported, so the same process tests both the
1-device path (arrays default to device 0) and 8-device meshes.
"""
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def shared_path() -> Path:
    """The read-only ``shared/`` folder beside the checkout (data and real tokenizers)."""
    env = os.environ.get("JAXDISTILL_SHARED")
    path = Path(env) if env else REPO.parent / "shared"
    if not path.is_dir():
        raise FileNotFoundError(f"shared data folder not found at {path}; set JAXDISTILL_SHARED")
    return path


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return shared_path()
