"""pyproject.toml: metadata that installs without setuptools' deprecation warnings."""

import re
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_license_is_an_spdx_expression_with_a_setuptools_that_reads_it():
    config = tomllib.loads(PYPROJECT.read_text())
    # `license = { text = ... }` is deprecated (setuptools warns on every install); PEP 639's
    # SPDX string needs setuptools >= 77
    assert config["project"]["license"] == "Apache-2.0"
    (setuptools,) = [r for r in config["build-system"]["requires"] if r.startswith("setuptools")]
    minimum = re.fullmatch(r"setuptools>=(\d+)(\.\d+)*", setuptools)
    assert minimum and int(minimum.group(1)) >= 77, setuptools
    assert not any(c.startswith("License ::") for c in config["project"].get("classifiers", []))
