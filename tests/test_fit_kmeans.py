"""`lit-codec fit-kmeans`: MFCC k-means on the shipped clips, loadable, deterministic."""

import pytest

from lit_codec.cli import main
from lit_codec.tokenizers.kmeans import KMeansQuantizer

from .test_pretrained import REPO

SPEECH = REPO / "data_prep" / "samples" / "speech" / "en"


def test_fits_on_a_folder_and_refits_identically(tmp_path, capsys):
    args = ["fit-kmeans", "--input", str(SPEECH), "--k", "8", "--max-clips", "4", "--max-iter", "5"]
    main([*args, "--output", str(tmp_path / "a.safetensors")])
    main([*args, "--output", str(tmp_path / "b.safetensors")])
    a, b = (KMeansQuantizer.load(tmp_path / f"{n}.safetensors") for n in "ab")
    assert a.k == 8 and a.dim == 39 and a.hash == b.hash
    out = capsys.readouterr().out
    assert "k-means k=8 dim=39" in out and f"hash {a.hash}" in out


@pytest.mark.parametrize("argv, message", [
    (["--input", "/nonexistent/dir", "--output", "x.safetensors"], "does not exist"),
    (["--input", str(SPEECH), "--output", "x.safetensors", "--k", "1"], "at least 2"),
])  # fmt: skip
def test_bad_input_exits_2(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        main(["fit-kmeans", *argv])
    assert e.value.code == 2 and message in capsys.readouterr().err
