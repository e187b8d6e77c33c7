"""The tiny ASR configs the ASR tests and their session fixtures (conftest.py) share: the sizes
(`ASR`, from train_toy.TINY), the short-run settings (`RUN`: MTP k = 2, two eval examples,
eight new tokens) and `sets`, the `--set` arguments of overrides."""

from train_toy import TINY

ASR = [o for o in TINY if not o.startswith(("audio.n_mels", "model.text_vocab_size",
                                            "train.seq_len", "train.max_mel_frames",
                                            "train.max_audio_clips"))]
ASR += ["model.text_vocab_size=128", "train.seq_len=160", "train.max_mel_frames=640",
        "train.max_audio_clips=2"]

RUN = [*ASR, "experiment.mtp.num_heads=2", "experiment.speed_examples=0",
       "experiment.eval_examples=2", "decode.max_new_tokens=8", "train.log_every=1",
       "train.checkpoint_every=1000"]


def sets(*overrides: str) -> list[str]:
    """["--set", o1, "--set", o2, ...] for a CLI's argv."""
    return [a for o in overrides for a in ("--set", o)]
