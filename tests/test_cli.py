import math
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from lit_codec.cli import expand_recipes, main, run_lightning
from lit_codec.codec import EXPECTED_CHECKPOINT, Codec

REPO = Path(__file__).resolve().parents[1]
# every recipe LightningCLI reads (recipes/lm/tasks.yaml is data: the LM task templates)
# but recipes/lm/ (CodecLM): tests/models/test_codec_lm.py builds and fits those on token
# shards it makes (they need a data root before the network can be sized)
RECIPES = sorted(p for p in (REPO / "recipes").rglob("*.yaml")
                 if p.name != "tasks.yaml" and "lm" not in p.relative_to(REPO / "recipes").parts)
SPEECH = sorted((REPO / "data_prep" / "samples" / "speech").rglob("*.flac"))


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: str(p.relative_to(REPO / "recipes")))
def test_every_recipe_parses_and_builds(recipe, tmp_path):
    text = recipe.read_text()
    assert (
        text.startswith("#") and "Run:" in text and "Result:" in text
    )  # a header that explains it
    configs = ["--config", str(recipe)]
    if "\nmodel:" not in text:  # a delta (e.g. fsdp.yaml): applied on top of the debug recipe
        configs = ["--config", str(REPO / "recipes/codec/debug.yaml"), *configs]
    cli = run_lightning(expand_recipes([*configs, "--trainer.default_root_dir", str(tmp_path),
                                        "--trainer.logger", "false"]), run=False)  # fmt: skip
    model, data = cli.model, cli.datamodule
    assert data.sample_rate == model.sample_rate  # linked, written once
    assert data.hop_length == model.hop_length
    assert model.quantizer.frame_rate == pytest.approx(model.sample_rate / model.hop_length)


def _built(name):
    return run_lightning(
        expand_recipes(
            ["--config", str(REPO / "recipes/codec" / name), "--trainer.logger", "false"]
        ),
        run=False,
    ).model


def test_the_seed_example_holds_for_the_24khz_recipe():
    model = _built("soundstream_24khz_6kbps.yaml")
    q = model.quantizer
    assert model.sample_rate == 24000 and model.hop_length == 320 and model.frame_rate == 75
    assert q.n_q == 8 and q.codebook_size == 1024 and q.kbps(8) == pytest.approx(6.0)
    assert q.n_q * math.log2(q.codebook_size) == 80


def test_the_speech_recipe_serves_every_bitrate():
    model = _built("speech_16khz_6kbps.yaml")
    q = model.quantizer
    assert model.frame_rate == 50 and q.n_q == 12 and q.codebook_size == 1024
    assert [q.n_q_for_kbps(k) for k in (1.5, 3, 6)] == [3, 6, 12]
    assert model.eval_n_qs() == [3, 6, 12]


def test_print_config_shows_the_derived_numbers(capsys):
    main(
        [
            "fit",
            "--config",
            str(REPO / "recipes/codec/soundstream_24khz_6kbps.yaml"),
            "--print_config",
        ]
    )
    out = capsys.readouterr().out
    assert "sample_rate: 24000" in out and "n_q: 8" in out
    assert "75 frames/s" in out and "= 6 kbps" in out and "80 bits/frame" in out


def test_lightning_runs_print_no_advertisement():
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "lit_codec.cli", "fit", "--print_config",
         "--config", str(REPO / "recipes/codec/debug.yaml")],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "sample_rate: 16000" in done.stdout
    assert "litlogger" not in done.stdout + done.stderr  # Lightning's cloud-logger tip


def test_recipes_extend_their_base():
    args = expand_recipes(["fit", "--config", str(REPO / "recipes/codec/debug.yaml")])
    configs = [args[i + 1] for i, a in enumerate(args) if a == "--config"]
    assert len(configs) == 2 and "SEANetGenerator" in configs[0] and "extends" not in configs[1]


@pytest.fixture(scope="module")
def trained_debug(tmp_path_factory, sample_shards):
    """The debug recipe fitted for a few steps through the CLI, in-process."""
    root = tmp_path_factory.mktemp("run")
    main(["fit", "--config", str(REPO / "recipes/codec/debug.yaml"), "--data.root", str(sample_shards),
          "--trainer.max_steps", "6", "--trainer.default_root_dir", str(root), "--trainer.logger", "false",
          "--trainer.enable_progress_bar", "false", "--data.num_workers", "0",
          "--model.init_args.quantizer.init_args.warmup_steps", "1"])  # fmt: skip
    return root / "checkpoints" / "last.ckpt"


def test_fit_writes_a_checkpoint_that_loads_safely(trained_debug):
    assert trained_debug.is_file()
    ckpt = torch.load(trained_debug, weights_only=True)  # no arbitrary unpickling needed
    assert ckpt["lit_codec"]["generator_step"] == 6
    codec = Codec.from_checkpoint(trained_debug)
    assert codec.sample_rate == 16000 and codec.n_q == 4


def test_encode_decode_round_trip_and_streaming_codes(trained_debug, tmp_path):
    # a stereo 44.1 kHz copy of a shipped clip: the CLI converts it
    audio, rate = sf.read(SPEECH[0])
    import soxr

    stereo = np.stack([soxr.resample(audio, rate, 44100)] * 2, axis=1) * 0.9
    src = tmp_path / "in.wav"
    sf.write(src, stereo, 44100)
    main(
        [
            "encode",
            "--ckpt",
            str(trained_debug),
            "--input",
            str(src),
            "--output",
            str(tmp_path / "a.npz"),
        ]
    )
    main(
        [
            "encode",
            "--ckpt",
            str(trained_debug),
            "--input",
            str(src),
            "--output",
            str(tmp_path / "s.npz"),
            "--chunk-ms",
            "20",
        ]
    )
    main(
        [
            "encode",
            "--ckpt",
            str(trained_debug),
            "--input",
            str(src),
            "--output",
            str(tmp_path / "k.npz"),
            "--kbps",
            "0.8",
        ]
    )
    offline, streamed, low = (np.load(tmp_path / f"{n}.npz") for n in "ask")
    assert offline["codes"].shape == (4, math.ceil(len(audio) / 320))
    np.testing.assert_array_equal(
        offline["codes"], streamed["codes"]
    )  # streaming gives the same codes
    assert low["codes"].shape[0] == 2 and float(low["kbps"]) == pytest.approx(0.8)
    np.testing.assert_array_equal(low["codes"], offline["codes"][:2])
    assert int(offline["sample_rate"]) == 16000 and float(offline["frame_rate"]) == 50
    main(
        [
            "decode",
            "--ckpt",
            str(trained_debug),
            "--input",
            str(tmp_path / "a.npz"),
            "--output",
            str(tmp_path / "b.wav"),
        ]
    )
    decoded, out_rate = sf.read(tmp_path / "b.wav")
    assert out_rate == 16000 and len(decoded) == len(audio) and np.isfinite(decoded).all()


def _refused(args: list[str], capsys) -> str:
    """Run ``lit-codec *args``, which must refuse its input (exit status 2); returns stderr."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        main(args)
    assert stop.value.code == 2
    return capsys.readouterr().err


def test_decoding_with_another_codec_is_refused(trained_debug, tmp_path, capsys):
    main(
        [
            "encode",
            "--ckpt",
            str(trained_debug),
            "--input",
            str(SPEECH[1]),
            "--output",
            str(tmp_path / "a.npz"),
        ]
    )
    other = Codec.from_checkpoint(trained_debug)
    with torch.no_grad():
        next(other.generator.parameters()).add_(0.01)
    other._fingerprint = "changed"
    other.config = dict(other.config)
    path = other.export(tmp_path / "other.safetensors")
    args = ["decode", "--ckpt", str(path), "--input", str(tmp_path / "a.npz"), "--output",
            str(tmp_path / "b.wav")]  # fmt: skip
    assert "encoded by codec" in _refused(args, capsys)


def test_unreadable_input_gives_a_clear_error(trained_debug, tmp_path, capsys):
    (tmp_path / "notes.wav").write_text("not audio at all\n" * 10)
    args = ["encode", "--ckpt", str(trained_debug), "--input", str(tmp_path / "notes.wav"),
            "--output", str(tmp_path / "x.npz")]  # fmt: skip
    assert re.search(r"notes.wav.*not audio", _refused(args, capsys))


def test_export_round_trip(trained_debug, tmp_path):
    codec = Codec.from_checkpoint(trained_debug)
    main(["export", "--ckpt", str(trained_debug), "--output", str(tmp_path / "c.safetensors")])
    exported = Codec.from_checkpoint(tmp_path / "c.safetensors")
    assert exported.fingerprint == codec.fingerprint
    wav = torch.from_numpy(sf.read(SPEECH[2], dtype="float32")[0])
    assert torch.equal(codec.encode(wav), exported.encode(wav))


def test_validate_test_and_predict_from_a_checkpoint(trained_debug, sample_shards):
    run = trained_debug.parent.parent  # the run's own folder: its checkpoint callback matches
    cli = run_lightning(expand_recipes(["--config", str(REPO / "recipes/codec/debug.yaml"), "--data.root", str(sample_shards),
                                        "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
                                        "--trainer.default_root_dir", str(run), "--data.num_workers", "0"]),
                        run=False)  # fmt: skip
    trainer, model, data = cli.trainer, cli.model, cli.datamodule
    (val,) = trainer.validate(model, datamodule=data, ckpt_path=str(trained_debug))
    (test,) = trainer.test(model, datamodule=data, ckpt_path=str(trained_debug))
    for results, stage in ((val, "val"), (test, "test")):
        for label in ("0.4kbps", "0.8kbps", "1.6kbps"):
            assert np.isfinite(results[f"{stage}/mel@{label}"])
        assert 0 < results[f"{stage}/vq/entropy_kbps"] <= 1.6
    predictions = trainer.predict(model, datamodule=data, ckpt_path=str(trained_debug))
    first = predictions[0]
    assert (
        first["codes"].shape[1] == 4 and first["audio"].shape[-1] == first["codes"].shape[-1] * 320
    )


def test_help_lists_every_command(capsys):
    from lit_codec.cli import LIGHTNING_COMMANDS
    from lit_codec.commands import COMMANDS

    main(["--help"])
    listed = capsys.readouterr().out
    for command in (*LIGHTNING_COMMANDS, *COMMANDS):
        assert f"\n  {command} " in listed, command
    with pytest.raises(SystemExit) as stop:  # no command: the overview, and a usage error
        main([])
    assert stop.value.code == 2 and "encode" in capsys.readouterr().out
    assert "unknown command 'encdoe'" in _refused(["encdoe"], capsys)


def test_encode_and_decode_with_the_denoising_flag(trained_debug, tmp_path, capsys):
    from .tiny_codecs import export_denoising_codec

    export_denoising_codec(tmp_path / "denoiser.safetensors", 8000, (2, 4))
    codec = Codec.from_checkpoint(tmp_path / "denoiser.safetensors")
    wav = 0.3 * np.random.default_rng(0).standard_normal(4000).astype(np.float32)
    sf.write(tmp_path / "noisy.wav", wav, 8000)
    ckpt, noisy = str(tmp_path / "denoiser.safetensors"), str(tmp_path / "noisy.wav")
    for chunk in ([], ["--chunk-ms", "20"]):
        out = tmp_path / f"codes{len(chunk)}.npz"
        main(
            ["encode", "--ckpt", ckpt, "--input", noisy, "--output", str(out), "--denoise", *chunk]
        )
        data = np.load(out)
        assert bool(data["denoised"])
        expected = codec.encode(torch.from_numpy(wav), denoise=True)[0]  # (n_q, frames)
        assert np.array_equal(data["codes"], expected.numpy())
        assert not np.array_equal(data["codes"], codec.encode(torch.from_numpy(wav))[0].numpy())
    decode = ["decode", "--ckpt", ckpt, "--input", str(out), "--output", str(tmp_path / "x.wav"),
              "--denoise"]  # fmt: skip
    assert "pass denoise to encode" in _refused(decode, capsys)  # its FiLM is in the encoder
    encode = ["encode", "--ckpt", str(trained_debug), "--input", noisy, "--output",
              str(tmp_path / "y.npz"), "--denoise"]  # fmt: skip
    assert "not trained to denoise" in _refused(encode, capsys)


@pytest.fixture
def tiny_export(tmp_path):
    """An exported tiny codec (8 kHz) and a WAV clip of its rate."""
    from .tiny_codecs import export_denoising_codec

    export = export_denoising_codec(tmp_path / "codec.safetensors", 8000, (2, 4))
    wav = tmp_path / "speech.wav"
    sf.write(wav, 0.1 * np.sin(np.arange(4000) / 7.0), 8000)
    return export, wav


def test_decode_names_a_file_that_is_not_codes(tiny_export, tmp_path, capsys):
    export, wav = tiny_export
    no_keys, objects = tmp_path / "no_keys.npz", tmp_path / "objects.npz"
    np.savez(no_keys, codes=np.zeros((2, 5), np.int16))
    np.savez(
        objects, codes=np.array([{"run": "me"}], dtype=object), fingerprint="x", num_samples=5
    )  # fmt: skip  (an array NumPy would have to unpickle)
    expected = {
        wav: "looks like a WAV audio file, not codes",
        no_keys: "is a NumPy .npz archive without fingerprint, num_samples, not codes",
        objects: "never unpickles",
        tmp_path / "missing.npz": "does not exist",
    }
    for path, looks in expected.items():
        args = ["decode", "--ckpt", str(export), "--input", str(path), "--output",
                str(tmp_path / "out.wav")]  # fmt: skip
        err = _refused(args, capsys)
        assert f"lit-codec decode: {path} " in err and looks in err, err
        assert "expected an .npz written by `lit-codec encode`" in err
        assert "allow_pickle" not in err  # never the advice to load it unsafely
    assert not (tmp_path / "out.wav").exists()


def _bad_inputs(tmp_path, export, wav) -> dict[str, tuple[list[str], Path]]:
    """Per command: arguments with one input of the wrong kind, and that input."""
    notes = tmp_path / "notes.txt"
    notes.write_text("not audio, not a codec\n")
    out = tmp_path / "out"
    return {
        "encode": (["--ckpt", str(wav), "--input", str(wav), "--output", f"{out}.npz"], wav),
        "decode": (["--ckpt", str(export), "--input", str(wav), "--output", f"{out}.wav"], wav),
        "export": (["--ckpt", str(wav), "--output", f"{out}.safetensors"], wav),
        "info": (["--ckpt", str(notes)], notes),
        "evaluate": (["--ckpt", str(wav), "--input", str(wav), "--output", str(out)], wav),
        "score": (["--reference", str(wav), "--degraded", str(notes)], notes),
    }


@pytest.mark.parametrize("command", ["encode", "decode", "export", "info", "evaluate", "score"])
def test_every_command_refuses_bad_input_with_status_2(command, tiny_export, tmp_path, capsys):
    args, bad = _bad_inputs(tmp_path, *tiny_export)[command]
    err = _refused([command, *args], capsys)
    assert err.startswith(f"lit-codec {command}: ") and str(bad) in err, err
    assert "Traceback" not in err


def test_the_console_script_exits_2_and_says_why(tiny_export, tmp_path):
    import subprocess
    import sys

    args, bad = _bad_inputs(tmp_path, *tiny_export)["info"]
    done = subprocess.run([sys.executable, "-m", "lit_codec.cli", "info", *args],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 2
    assert (
        done.stderr
        == f"lit-codec info: {bad} looks like a text file, not a codec checkpoint: expected {EXPECTED_CHECKPOINT}\n"
    )


def test_an_output_that_cannot_be_written_exits_1(tiny_export, tmp_path, capsys):
    export, _ = tiny_export
    blocker = tmp_path / "taken"
    blocker.write_text("a file where a folder should go")
    with pytest.raises(SystemExit) as stop:
        main(["export", "--ckpt", str(export), "--output", str(blocker / "codec.safetensors")])
    assert stop.value.code == 1  # failed while running, not bad input
    assert str(blocker) in capsys.readouterr().err


def test_threads_option(tiny_export, tmp_path, monkeypatch, capsys):
    from lit_codec.cli import default_threads

    export, wav = tiny_export
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert default_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert default_threads() == 3
    try:
        main(["encode", "--ckpt", str(export), "--input", str(wav), "--output",
              str(tmp_path / "a.npz"), "--chunk-ms", "20", "--threads", "2"])  # fmt: skip
        assert torch.get_num_threads() == 2
        main(["decode", "--ckpt", str(export), "--input", str(tmp_path / "a.npz"), "--output",
              str(tmp_path / "a.wav")])  # fmt: skip
        assert torch.get_num_threads() == 3  # OMP_NUM_THREADS without --threads
    finally:
        torch.set_num_threads(1)
    for command, (args, _) in _bad_inputs(tmp_path, *tiny_export).items():
        if command in ("export", "info"):  # no computation to spread
            continue
        with pytest.raises(SystemExit) as stop:  # argparse: a usage error
            main([command, *args, "--threads", "0"])
        assert stop.value.code == 2
        assert "--threads: expected a whole number >= 1, not '0'" in capsys.readouterr().err
