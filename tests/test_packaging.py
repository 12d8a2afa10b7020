"""What the wheel ships: one installed name (``dust``), and the process definitions
``dust demo`` starts (the repository's Procfile, shipped inside the package).

Installing a built wheel into a fresh virtual environment and running ``dust demo`` outside
the checkout takes minutes: ``make test-wheel`` (``.ci/test-wheel``), run once by CI.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from dust.worker import procfile

ROOT = Path(__file__).resolve().parent.parent


def test_the_shipped_procfile_is_the_repository_procfile() -> None:
    assert procfile.PROCFILE == ROOT / "worker" / "Procfile"
    assert procfile.PROCFILE.read_bytes() == (ROOT / "Procfile").read_bytes()
    assert set(procfile.read()) == {"worker", "requests", "beat"}


def test_one_installed_name() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    setuptools = config["tool"]["setuptools"]
    assert {name.split(".")[0] for name in setuptools["packages"]} == {"dust"}
    assert set(setuptools["packages"]) == set(setuptools["package-dir"])
    for name, folder in setuptools["package-dir"].items():
        assert (ROOT / folder).is_dir(), name
    assert "Procfile" in setuptools["package-data"]["dust.worker"]
    assert config["project"]["scripts"]["dust"] == "dust.cli:main"
