"""A tiny trained TTS stack for the TTS tests: the tiny corpus, a codec trained a few steps
per stage (its code cache of the train and validation splits), and a TTS run trained on
those codes. Shapes and plumbing are real; the audio is not speech."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

from codec_fixtures import TINY_OVERRIDES
from train_toy import TINY

CODEC_SCHEDULE = [f"experiment.train.{stage}.{key}={value}"
                  for stage in ("speaker", "tokenizer", "flow", "vocoder")
                  for key, value in (("steps", 2), ("batch_size", 4), ("warmup_steps", 1))]
# The TTS backbone over the codec's 1000 codes (8 x 5 x 5 x 5 FSQ levels).
TTS_SETS = [o for o in TINY if not o.startswith(("audio.n_mels", "model.text_vocab_size",
                                                 "model.num_audio_codes", "train.seq_len"))]
TTS_SETS += ["model.text_vocab_size=128", "model.num_audio_codes=1000", "train.seq_len=384"]


def _run(cmd: list[str], log: str) -> None:
    env = dict(os.environ, JAX_PLATFORMS="cpu", CHORUS_CODEC_FAST_COMPILE="1",
               XLA_FLAGS="--xla_force_host_platform_device_count=1")
    with open(log, "w") as f:
        rc = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT).returncode
    if rc:
        with open(log) as f:
            raise RuntimeError(f"{' '.join(cmd[:6])} ... failed ({rc}):\n{f.read()[-3000:]}")


def sets(*overrides: str) -> list[str]:
    return [a for s in overrides for a in ("--set", s)]


def train_tiny_tts_stack(corpus: str, root: str, tts_steps: int = 4) -> dict[str, str]:
    """{"data_dir", "codec", "tts", "cache_key"} under `root` (a copy of `corpus`)."""
    data_dir = os.path.join(root, "corpus")
    shutil.copytree(corpus, data_dir)
    codec, tts = os.path.join(root, "codec"), os.path.join(root, "tts")
    chorus = [sys.executable, "-m", "chorus.cli"]
    _run([*chorus, "train", "--experiment", "codec", "--workdir", codec, "--data", data_dir,
          "--quiet", *sets(*TINY_OVERRIDES, *CODEC_SCHEDULE, "train.log_every=1")],
         os.path.join(root, "codec.log"))
    _run([*chorus, "codec", "encode", "--workdir", codec, "--split", "validation"],
         os.path.join(root, "encode.log"))
    with open(os.path.join(codec, "corpus_codes.json")) as f:
        key = json.load(f)["producer_key"]
    _run([*chorus, "train", "--experiment", "tts", "--workdir", tts, "--data", data_dir,
          "--quiet", *sets(*TTS_SETS, f"experiment.cache_key={key}",
                           f"experiment.codec_run={codec}", "experiment.control_dropout=0.3",
                           f"train.steps={tts_steps}", "train.log_every=1")],
         os.path.join(root, "tts.log"))
    return {"data_dir": data_dir, "codec": codec, "tts": tts, "cache_key": key}
