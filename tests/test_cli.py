from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from streamer.cli import main

from .conftest import FIXTURES, normalize
from .test_audio import write_wav


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "streamer", *args], capture_output=True, text=True, timeout=300)


def test_transcribe_prints_text() -> None:
    proc = run_cli("transcribe", str(FIXTURES / "sense_and_sensibility_01_austen_64kb-0890.wav"))
    assert proc.returncode == 0, proc.stderr
    # "cold-hearted" comes as one word or two, depending on the CPU's kernels
    assert normalize(proc.stdout).replace("cold hearted", "coldhearted") == (
        "unless to be rather coldhearted and rather selfish is to be ill disposed"
    )
    assert proc.stderr == ""


def test_a_transcribe_process_leaves_its_files_and_log_complete(tmp_path: Path) -> None:
    """The program skips the interpreter's teardown after a one-shot command: what it wrote is all there."""
    clip = FIXTURES / "sense_and_sensibility_01_austen_64kb-0870.wav"
    proc = run_cli("-v", "transcribe", str(clip), "--format", "srt", "--output-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    written = tmp_path / f"{clip.stem}.srt"
    assert proc.stderr.rstrip().endswith(f"wrote {written}")
    assert "dashwood" in normalize(" ".join(c[3] for c in parse_srt(written.read_text())))


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("bad.wav", "malformed WAV (chunk 'fmt ' of 1717986918 bytes runs past the end)"),
        ("evil.wav", "malformed WAV (chunk 'HURF' of 960051513 bytes runs past the end)"),
        ("awful.wav", "unsupported sample rate 1092676 Hz (expected 1000-384000)"),
    ],
)
def test_malformed_file_exits_2_with_one_line(name: str, message: str) -> None:
    proc = run_cli("transcribe", str(FIXTURES / name))
    assert proc.returncode == 2
    assert proc.stderr == f"streamer: error: {FIXTURES / name}: {message}\n"
    assert proc.stdout == ""


def test_empty_wav_gives_empty_transcript(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["transcribe", str(FIXTURES / "null.wav")]) == 0
    assert capsys.readouterr().out == "\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "no-such-model"], "streamer: error: no-such-model: no such model (bundled models: tiny.en, base;"),
        (["--language", "klingon"], "streamer: error: --language: unknown language 'klingon'"),
        (["--language", "de"], "streamer: error: --language de: model tiny.en is English-only"),
        (["--task", "translate"], "streamer: error: --task translate: model tiny.en is English-only"),
        (["--output-dir", "/no/such/dir"], "streamer: error: --output-dir: /no/such/dir is not a directory"),
    ],
)
def test_bad_options_exit_2(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["transcribe", str(FIXTURES / "001.wav"), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--beam-size", "0"], "argument --beam-size: expected a positive whole number, got '0'"),
        (["--final-beam-size", "0"], "argument --final-beam-size: expected a positive whole number, got '0'"),
        (["--format", "docx"], "argument --format: invalid choice: 'docx'"),
        (["--device", "tpu"], "argument --device: invalid choice: 'tpu'"),
    ],
)
def test_bad_option_values_exit_2(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["transcribe", str(FIXTURES / "001.wav"), *args])
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_cuda_device_without_cuda(capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert main(["transcribe", str(FIXTURES / "001.wav"), "--device", "cuda"]) == 2
    assert capsys.readouterr().err == "streamer: error: --device cuda: CUDA is not available on this machine\n"


def test_serve_refuses_several_workers_on_cuda_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--port", "0", "--device", "cuda", "--workers", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("streamer: error: --workers: several inference workers run on the CPU only") and err.count(
        "\n") == 1


def parse_srt(text: str) -> list[tuple[int, str, str, str]]:
    cues = []
    for block in text.strip().split("\n\n"):
        index, times, *lines = block.split("\n")
        start, end = times.split(" --> ")
        cues.append((int(index), start, end, " ".join(lines)))
    return cues


def test_srt_json_and_vtt_outputs(tmp_path: Path) -> None:
    clip = str(FIXTURES / "sense_and_sensibility_01_austen_64kb-0870.wav")
    for fmt in ("srt", "vtt", "json"):
        assert main(["transcribe", clip, "--format", fmt, "--output-dir", str(tmp_path)]) == 0
    stem = "sense_and_sensibility_01_austen_64kb-0870"
    cues = parse_srt((tmp_path / f"{stem}.srt").read_text())
    assert cues[0][0] == 1 and cues[0][1] == "00:00:00,000"
    assert "dashwood" in normalize(" ".join(c[3] for c in cues))
    vtt = (tmp_path / f"{stem}.vtt").read_text()
    assert vtt.startswith("WEBVTT\n\n00:00:00.000 --> ")
    data = json.loads((tmp_path / f"{stem}.json").read_text())
    assert data["language"] == "en" and "Dashwood" in data["text"]
    assert all(s["start"] <= s["end"] <= data["duration"] for s in data["segments"])


def test_batched_transcription_shows_its_progress_and_prints_the_text(capsys: pytest.CaptureFixture[str]) -> None:
    garden = FIXTURES / "speech" / "garden.wav"  # 63 s, three windows
    assert main(["transcribe", str(garden), "--batch-size", "2", "--progress"]) == 0
    out, err = capsys.readouterr()
    assert "garden.wav [" in err and "100%" in err and "63.1/63.1 s" in err
    assert err.count("%") >= 2  # a step per batch, not only the end
    assert "garden" in normalize(out).split() and len(normalize(out).split()) > 120


def test_batch_size_refuses_beam_search() -> None:
    proc = run_cli("transcribe", str(FIXTURES / "001.wav"), "--batch-size", "4", "--beam-size", "2")
    assert proc.returncode == 2 and "--batch-size decodes greedily" in proc.stderr


def test_progress_bar_for_audio_over_a_minute(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "long.wav"
    write_wav(path, np.zeros(16000 * 62, dtype=np.float32), 16000, 1, 16)
    assert main(["transcribe", str(path), "--progress"]) == 0
    err = capsys.readouterr().err
    assert "long.wav [" in err and "100%" in err and "62.0/62.0 s" in err


@pytest.mark.parametrize(
    ("device", "value", "beams"),
    [("cpu", None, 5), ("cpu", 1, None), ("cpu", 3, 3), ("cuda", None, None), ("cuda", 3, 3)],
)
def test_final_beam_size_sets_the_beams_of_final_decodes(device: str, value: int | None, beams: int | None) -> None:
    from streamer.cli.common import stream_config

    args = argparse.Namespace(max_hold=None, final_beam_size=value, compute_device=device)
    assert stream_config(args).final_beam_size == beams


@pytest.mark.parametrize(("argv", "hold"), [([], 1.5), (["--max-hold", "2.5"], 2.5), (["--max-hold", "0"], None)])
def test_max_hold_sets_how_long_a_word_waits_for_agreement(argv: list[str], hold: float | None) -> None:
    from streamer.cli import build_parser
    from streamer.cli.common import stream_config

    args = build_parser().parse_args(["serve", *argv])
    assert stream_config(args).max_hold == hold


@pytest.mark.parametrize(
    ("argv", "hold"), [([], 1.0), (["--majority-hold", "1.5"], 1.5), (["--majority-hold", "0"], None)]
)
def test_majority_hold_sets_when_most_hypotheses_decide(argv: list[str], hold: float | None) -> None:
    from streamer.cli import build_parser
    from streamer.cli.common import stream_config

    args = build_parser().parse_args(["serve", *argv])
    assert stream_config(args).majority_hold == hold


@pytest.mark.parametrize(
    ("device", "argv", "margin"),
    [("cpu", [], 0.5), ("cpu", ["--encoder-margin", "1"], 1.0), ("cpu", ["--encoder-margin", "30"], None),
     ("cuda", [], None), ("cuda", ["--encoder-margin", "0.5"], 0.5)],
)
def test_encoder_margin_sets_how_much_of_a_partial_decodes_window_is_computed(
    device: str, argv: list[str], margin: float | None
) -> None:
    from streamer.cli import build_parser
    from streamer.cli.common import stream_config

    args = build_parser().parse_args(["serve", *argv])
    args.compute_device = device
    assert stream_config(args).encoder_margin == margin


@pytest.mark.parametrize(("value", "rows"), [(None, 5), (7, 7), (1, 4)])
def test_the_cpu_engine_has_a_row_for_each_beam_of_a_final_decode_and_one_window(value: int | None, rows: int) -> None:
    import torch

    from streamer.cli.common import engine
    from streamer.model.loading import load_model

    args = argparse.Namespace(max_hold=None, final_beam_size=value, compute_device="cpu",
                              compute_type=None, cuda_graphs=True)
    built = engine(args, load_model("tiny.en"), torch.device("cpu"))
    assert built.max_batch == rows and built.max_windows == 1
    assert built.cache.self_k.shape[1] == rows and built.cache.cross_k.shape[1] == 1  # one window's audio K/V


def test_transcribe_with_the_encoders_attention_in_bfloat16() -> None:
    proc = run_cli("transcribe", str(FIXTURES / "sense_and_sensibility_01_austen_64kb-0880.wav"),
                   "--compute-type", "int8_bfloat16")
    assert proc.returncode == 0, proc.stderr
    assert "young man" in normalize(proc.stdout)


def test_int8_bfloat16_on_cuda_is_refused_in_one_line() -> None:
    proc = run_cli("transcribe", str(FIXTURES / "001.wav"), "--compute-type", "int8_bfloat16", "--device", "cuda")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
