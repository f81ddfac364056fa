"""`make quickstart` (lit_codec.quickstart): what it prints must add up and work as printed."""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from lit_codec import quickstart

REPO = Path(__file__).resolve().parents[1]


def test_generator_steps_to_lightning_max_steps():
    assert quickstart.discriminator_start(REPO / "recipes/codec/debug.yaml") == 100
    assert quickstart.discriminator_start(REPO / "recipes/codec/base.yaml") == 0
    assert quickstart.optimizer_steps(400, 100) == 700  # 400 G + 300 D
    assert quickstart.optimizer_steps(50, 100) == 50  # the discriminator has not started
    line = quickstart.explain_steps(400, 100)
    assert line.startswith("400 generator steps = 700 optimizer steps (Lightning's max_steps=700")


def test_the_quoted_speech_result_is_what_its_recipe_header_says():
    header = (REPO / quickstart.SPEECH_RECIPE).read_text().split("\nmodel:")[0]
    header = " ".join(line.lstrip("# ") for line in header.splitlines())  # unwrapped
    for fact in quickstart.SPEECH_RESULT.values():
        assert fact in header, fact
    assert "hours of training" in quickstart.QUALITY_NOTE


def _runs(command: str) -> bool:
    """Whether ``<command> --help``, split as a shell would, shows lit-codec's overview."""
    done = subprocess.run([*shlex.split(command), "--help"], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    return done.returncode == 0 and "encode" in done.stdout


def test_the_printed_command_runs_as_printed(monkeypatch, tmp_path):
    assert _runs(quickstart.lit_codec_command())  # the console script (or `lit-codec`)
    python = sys.executable
    # a Python without the console script beside it: the module form, which works as well
    monkeypatch.setattr(sys, "executable", str(tmp_path / "bin" / "python"))
    assert quickstart.lit_codec_command() == f"{tmp_path}/bin/python -m lit_codec.cli"
    assert _runs(f"{shlex.quote(python)} -m lit_codec.cli")


@pytest.mark.slow
def test_quickstart_says_what_its_numbers_mean(tmp_path, monkeypatch, capsys):
    # the discriminator starts at generator step 2 instead of 100, so that 4 generator
    # steps take both networks' updates (6 optimizer steps) in a few seconds
    monkeypatch.setattr(quickstart, "discriminator_start", lambda recipe: 2)
    quickstart.main(["--workdir", str(tmp_path), "--steps", "4", "--max-minutes", "5"])
    out = capsys.readouterr().out
    assert "for 4 generator steps" in out
    assert "4 generator steps = 6 optimizer steps (Lightning's max_steps=6 counts" in out
    assert "trained 4 generator steps = 6 optimizer steps in" in out  # read from last.ckpt
    assert re.search(r"decoded .*\(PESQ-WB \d\.\d\d, STOI", out)
    quality = " ".join(out.split("  quality     ")[1].split("  next ")[0].split())  # unwrapped
    assert "smoke test" in quality and "hours of training" in quality
    command = out.split("  next        ")[1].split(" fit --config")[0]
    assert _runs(command), command
