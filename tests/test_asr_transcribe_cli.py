"""`chorus transcribe` (experiments/asr/cli.py) on the suite's tiny ASR run: any format / rate /
channel count, long audio through long-form windows, many files with unreadable ones reported
and skipped (exit 1), json / text / srt output, --out files, bad arguments (exit 2); and the
SRT writer (experiments/asr/subtitles.py) against hand-written text."""

import json
import os

import numpy as np
import pytest
import soundfile

from chorus.config import ConfigError
from experiments.asr import cli as asr_cli
from experiments.asr.subtitles import (
    Cue,
    cues_from_segments,
    cues_from_words,
    format_timestamp,
    to_srt,
)

FAST = ["--greedy", "--batch-size", "2", "--set", "decode.max_new_tokens=4"]


@pytest.mark.parametrize("seconds,expected", [
    (0, "00:00:00,000"), (0.0004, "00:00:00,000"), (0.0005, "00:00:00,001"),
    (1.5, "00:00:01,500"), (59.9994, "00:00:59,999"), (59.9995, "00:01:00,000"),
    (3599.9995, "01:00:00,000"), (3725.042, "01:02:05,042"), (90061.25, "25:01:01,250")])
def test_srt_timestamps_round_half_up_to_the_millisecond(seconds, expected):
    assert format_timestamp(seconds) == expected


def test_srt_timestamps_reject_negative_and_non_finite_times():
    for bad in (-0.001, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="timestamp: expected finite seconds >= 0"):
            format_timestamp(bad)


def test_srt_of_cues_is_the_hand_written_file():
    cues = [Cue(0.0, 2.5, "Turn off the lights."), Cue(2.5, 2.5, "  "),
            Cue(3661.001, 3662.0, " How many apples? ")]
    assert to_srt(cues) == ("1\n00:00:00,000 --> 00:00:02,500\nTurn off the lights.\n\n"
                            "2\n01:01:01,001 --> 01:01:02,000\nHow many apples?\n\n")
    assert to_srt([]) == ""


def test_cues_from_words_split_at_the_character_and_duration_limits():
    words = [{"word": w, "start": s, "end": e} for w, s, e in [
        ("turn", 0.0, 0.3), ("off", 0.3, 0.5), ("the", 0.5, 0.6), ("lights", 0.6, 1.0),
        ("please", 1.2, 7.5), ("now", 8.0, 8.2)]]
    cues = cues_from_words(words, max_seconds=6.0, max_chars=13)
    assert cues == [Cue(0.0, 0.6, "turn off the"), Cue(0.6, 1.0, "lights"),
                    Cue(1.2, 7.5, "please"), Cue(8.0, 8.2, "now")]
    # by duration alone: "please" ends 7.5 s after "turn" starts, "now" 7.0 s after "please"
    assert cues_from_words(words, max_seconds=7.0, max_chars=100) == [
        Cue(0.0, 1.0, "turn off the lights"), Cue(1.2, 8.2, "please now")]


def test_cues_from_segments_time_words_by_their_characters():
    # "ab cd" over [10, 15): "ab" is chars [0, 2) -> [10, 12), "cd" [3, 5) -> [13, 15)
    assert cues_from_segments([(10.0, 15.0, "ab cd")], max_chars=2) == [
        Cue(10.0, 12.0, "ab"), Cue(13.0, 15.0, "cd")]
    assert cues_from_segments([(0.0, 1.0, "x y"), (1.0, 2.0, "")]) == [Cue(0.0, 1.0, "x y")]


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Two synthesized utterances as WAVs, plus a long (> 6.4 s, the run's window) WAV of
    them repeated, a stereo FLAC at 22.05 kHz, and files that cannot be read."""
    import librosa

    from data_pipelines.synthesis import synthesize

    folder = tmp_path_factory.mktemp("audio")
    a, _ = synthesize("turn off the lights", voice="en-us+f3", rate=160)
    b, _ = synthesize("how many apples did vera buy", voice="en-gb-scotland+f2", rate=115)
    paths = {"a": folder / "a.wav", "b": folder / "b.wav", "long": folder / "long.wav",
             "stereo": folder / "stereo.flac", "junk": folder / "notes.wav",
             "empty": folder / "empty.wav", "missing": folder / "missing.wav"}
    soundfile.write(paths["a"], a, 16_000)
    soundfile.write(paths["b"], b, 16_000)
    long = np.concatenate([a, b] * 4)
    soundfile.write(paths["long"], long, 16_000)
    b22 = librosa.resample(b, orig_sr=16_000, target_sr=22_050)
    soundfile.write(paths["stereo"], np.stack([b22, b22], axis=1), 22_050)
    paths["junk"].write_text("not audio")
    soundfile.write(paths["empty"], np.zeros(0, np.float32), 16_000)
    return {k: str(v) for k, v in paths.items()}, len(long) / 16_000


def _lines(out: str) -> list[dict]:
    return [json.loads(line) for line in out.strip().splitlines()]


def test_many_files_with_unreadable_ones_are_reported_skipped_and_exit_1(tiny_asr_run, clips,
                                                                         capsys):
    paths, long_seconds = clips
    argv = ["--workdir", str(tiny_asr_run), *FAST, paths["a"], paths["junk"], paths["long"],
            paths["missing"], paths["empty"], paths["stereo"], paths["b"]]
    capsys.readouterr()
    assert asr_cli.main(argv) == 1
    captured = capsys.readouterr()
    lines = _lines(captured.out)
    assert [r["file"] for r in lines] == [paths[k] for k in ("a", "long", "stereo", "b")]
    err = captured.err
    assert f"{paths['junk']}: expected a readable audio file" in err
    assert f"{paths['missing']}: expected an existing audio file" in err
    assert f"{paths['empty']}: expected audio, got 0 samples" in err
    assert err.count("; skipped") == 3 and "3 of 7 files could not be read" in err
    by_name = {os.path.basename(r["file"]): r for r in lines}
    long = by_name["long.wav"]
    # 8 utterances back to back, > 6.4 s: windows at the pauses the VAD finds
    assert long["windows"] == len(long["segments"]) >= 2
    assert long["audio_seconds"] == pytest.approx(long_seconds, abs=0.01)
    times = [t for seg in long["segments"] for t in (seg["start"], seg["end"])]
    assert times == sorted(times) and 0 <= times[0] and times[-1] <= long_seconds
    assert by_name["a.wav"]["windows"] == 1 and by_name["a.wav"]["step"] == 3
    # stereo at 22.05 kHz: channels averaged, resampled; the same clip as b.wav
    assert by_name["stereo.flac"]["audio_seconds"] == pytest.approx(
        by_name["b.wav"]["audio_seconds"], abs=0.01)


def test_the_default_decoder_of_a_run_with_a_ctc_head_is_joint_decoding(tiny_asr_run, clips,
                                                                        capsys):
    paths, _ = clips
    argv = ["--workdir", str(tiny_asr_run), "--set", "decode.max_new_tokens=4", paths["a"]]
    assert asr_cli.main(argv) == 0
    assert _lines(capsys.readouterr().out)[0]["mode"] == "joint"


def test_batches_do_not_change_the_transcripts(tiny_asr_run, clips, capsys):
    paths, _ = clips
    files = [paths["long"], paths["a"], paths["b"]]
    texts = {}
    for batch in ("1", "2"):
        argv = ["--workdir", str(tiny_asr_run), "--greedy", "--batch-size", batch,
                "--set", "decode.max_new_tokens=4", *files]
        assert asr_cli.main(argv) == 0
        texts[batch] = [(r["file"], r["text"]) for r in _lines(capsys.readouterr().out)]
    assert texts["1"] == texts["2"] and len(texts["1"]) == 3


def test_text_and_srt_formats_to_stdout_and_out_dir(tiny_asr_run, clips, tmp_path, capsys):
    paths, long_seconds = clips
    run = ["--workdir", str(tiny_asr_run), *FAST]
    assert asr_cli.main([*run, paths["a"]]) == 0
    record = _lines(capsys.readouterr().out)[0]
    assert asr_cli.main([*run, "--format", "text", paths["a"]]) == 0
    assert capsys.readouterr().out == record["text"] + "\n"
    assert asr_cli.main([*run, "--format", "text", paths["a"], paths["b"]]) == 0
    out = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in out] == [paths["a"], paths["b"]]
    assert out[0] == f"{paths['a']}\t{record['text']}"

    assert asr_cli.main([*run, "--format", "srt", paths["long"]]) == 0
    srt = capsys.readouterr().out
    blocks = [b.splitlines() for b in srt.strip().split("\n\n")] if srt.strip() else []
    for i, block in enumerate(blocks, start=1):
        assert block[0] == str(i) and " --> " in block[1] and block[2]
    out_dir = tmp_path / "subs"
    assert asr_cli.main([*run, "--format", "srt", "--out", str(out_dir), paths["long"],
                         paths["a"]]) == 0
    assert capsys.readouterr().out.splitlines() == [str(out_dir / "long.srt"),
                                                    str(out_dir / "a.srt")]
    assert (out_dir / "long.srt").read_text() == srt
    assert asr_cli.main([*run, "--out", str(out_dir), paths["a"]]) == 0
    capsys.readouterr()
    saved = json.loads((out_dir / "a.json").read_text())
    assert saved["text"] == record["text"] and saved["segments"] == record["segments"]


@pytest.mark.parametrize("extra,message", [
    (["--overlap", "4"], "longform.overlap_seconds: expected at most half the model's window, "
                         "3.2 s"),
    (["--batch-size", "0"], "longform.batch_size: expected an integer >= 1, got 0"),
    (["--format", "srt"], "--format srt: expected --out DIR with more than one file"),
    (["--out", "somewhere"], "--out: expected one output per file, got somewhere/a.json"),
    (["--set", "train.max_mel_frames=-1"], "train.max_mel_frames"),
])
def test_bad_arguments_exit_2_before_the_run_is_restored(tiny_asr_run, clips, monkeypatch,
                                                         capsys, extra, message):
    from experiments.asr import transcriber

    def restore(*args, **kwargs):
        raise AssertionError("restore reached")

    monkeypatch.setattr(transcriber, "load_transcriber", restore)
    paths, _ = clips
    other = os.path.join(os.path.dirname(paths["a"]), "x", "a.wav")  # same stem as a.wav
    capsys.readouterr()
    assert asr_cli.main(["--workdir", str(tiny_asr_run), *extra, paths["a"], other]) == 2
    assert message in capsys.readouterr().err


def test_no_readable_file_exits_1_without_restoring_and_a_bad_run_exits_2(
        tiny_asr_run, clips, tmp_path, monkeypatch, capsys):
    from experiments.asr import transcriber

    paths, _ = clips
    assert asr_cli.main(["--workdir", str(tmp_path / "nowhere"), paths["a"]]) == 2
    assert "nowhere" in capsys.readouterr().err

    def restore(*args, **kwargs):
        raise FileNotFoundError("restore reached")

    monkeypatch.setattr(transcriber, "load_transcriber", restore)
    assert asr_cli.main(["--workdir", str(tiny_asr_run), paths["junk"], paths["empty"]]) == 1
    err = capsys.readouterr().err
    assert "2 of 2 files could not be read" in err and "restore reached" not in err
    # a readable file reaches the restore, whose failure is a bad run: exit 2
    assert asr_cli.main(["--workdir", str(tiny_asr_run), paths["junk"], paths["a"]]) == 2
    assert "restore reached" in capsys.readouterr().err
