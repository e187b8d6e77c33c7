"""A trained codec: waveform <-> 25 Hz codes, transcripts and speaker embeddings.

    codec = Codec.load(run_dir)                     # a `chorus train --experiment codec` run
    codes = codec.encode(wave)                      # int32 (N,), N = ceil(frames / 4)
    wave2 = codec.decode(codes, speaker=codec.speaker_embedding(ref_wave))
    text = codec.transcribe(wave)                   # CTC head, greedy

Variable-length inputs are padded to whole seconds (1 s = 100 frames = 25 codes) and masked,
so only a few shapes compile and padding never changes a result.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from chorus.audio.io import check_wave
from chorus.codec import flow, text
from chorus.codec.compile import jit
from chorus.codec.config import CodecConfig
from chorus.codec.features import clip_log_mel, pad_batch, round_up
from chorus.codec.models import NETWORKS, CodecModels
from chorus.codec.vocoder import griffin_lim

CODES_PER_BUCKET = 25  # one second
# Mean speaker embedding per training voice, written into the run dir by the training
# (so `decode --voice NAME` needs no reference clip).
VOICES_NAME = "voices.json"


class Codec:
    def __init__(self, cfg: CodecConfig, params: Mapping[str, object],
                 voices: Mapping[str, np.ndarray] | None = None):
        """params: {network name: its params} for some of NETWORKS (a codec being trained
        has only the earlier networks; using a missing one is an error naming it)."""
        unknown = sorted(set(params) - set(NETWORKS))
        if unknown:
            raise ValueError(f"Codec params: expected networks among {list(NETWORKS)}, got "
                             f"{unknown}")
        self.cfg = cfg
        self.models = CodecModels.build(cfg)
        self._params = dict(params)
        self.voices = dict(voices or {})
        self._sample_fns: dict = {}

    # ------------------------------------------------------------------ loading

    @classmethod
    def load(cls, run_dir: str, networks: Sequence[str] = NETWORKS) -> Codec:
        """The codec trained in `run_dir` (one stage run per network in `run_dir/<name>/`),
        params only (`chorus.training.restore.load_run`): no training data needed."""
        from chorus.training.restore import load_run

        cfg, params = None, {}
        for name in networks:
            stage_dir = os.path.join(run_dir, name)
            if not os.path.isdir(stage_dir):
                raise FileNotFoundError(f"{run_dir}: expected a trained codec with the stage "
                                        f"run {stage_dir} (run `chorus train --experiment codec "
                                        f"--workdir {run_dir}` first)")
            # One device: the codec's jits run per utterance, unsharded.
            run = load_run(stage_dir, devices=jax.local_devices()[:1])
            stage_cfg = CodecConfig.from_experiment(run.config.experiment)
            if cfg is not None and stage_cfg != cfg:
                raise ValueError(f"{stage_dir}/config.json: expected the codec networks of the "
                                 f"other stages, got different experiment sections (a stage "
                                 f"trained with other --set values?)")
            cfg = stage_cfg
            params[name] = run.params[name]
        voices = {}
        path = os.path.join(run_dir, VOICES_NAME)
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                voices = {k: np.asarray(v, np.float32) for k, v in json.load(f).items()}
        return cls(cfg, params, voices)

    def network_params(self, name: str):
        if name not in self._params:
            raise ValueError(f"codec: the {name} network is not loaded (loaded: "
                             f"{sorted(self._params)}); train its stage first")
        return self._params[name]

    # ------------------------------------------------------------------ features

    @property
    def min_samples(self) -> int:
        return self.cfg.mel.samples_per_code

    def check(self, wave: np.ndarray, source: str = "waveform") -> np.ndarray:
        return check_wave(wave, source, self.min_samples)

    def log_mel(self, wave: np.ndarray) -> np.ndarray:
        """Raw log-mel (N // hop, n_mels) of a 16 kHz clip."""
        return clip_log_mel(self.check(wave), self.cfg.mel)

    def _padded_mel(self, wave: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        mel = self.cfg.mel.normalize(self.log_mel(wave)).astype(np.float32, copy=False)
        frames = mel.shape[0]
        padded, mask = pad_batch([mel], round_up(frames, 4 * CODES_PER_BUCKET))
        return padded, mask, frames

    # ------------------------------------------------------------------ analysis

    @functools.cached_property
    def _indices_fn(self):
        return jit(lambda p, m, k: self.models.tokenizer.apply(
            {"params": p}, m, k, method=type(self.models.tokenizer).indices))

    def encode(self, wave: np.ndarray) -> np.ndarray:
        """Waveform -> int32 codes at 25 Hz: ceil((N // hop) / 4) of them."""
        mel, mask, frames = self._padded_mel(wave)
        codes = self._indices_fn(self.network_params("tokenizer"), mel, mask)
        return np.asarray(codes[0, :-(-frames // 4)], np.int32)

    @functools.cached_property
    def _ctc_fn(self):
        return jit(lambda p, c, k: self.models.tokenizer.apply(
            {"params": p}, c, k, method=type(self.models.tokenizer).ctc_from_indices))

    def transcribe_codes(self, codes: np.ndarray) -> str:
        """CTC greedy transcript of codes: what content the codes carry."""
        codes = self.check_codes(codes)
        n = codes.size
        padded, mask = pad_batch([codes], round_up(n, CODES_PER_BUCKET))
        logits = self._ctc_fn(self.network_params("tokenizer"), padded, mask)
        return text.ctc_greedy(np.asarray(jnp.argmax(logits[0, :n], axis=-1)))

    def transcribe(self, wave: np.ndarray) -> str:
        return self.transcribe_codes(self.encode(wave))

    @functools.cached_property
    def _speaker_fn(self):
        return jit(lambda p, m, k: self.models.speaker.apply({"params": p}, m, k))

    def speaker_embedding(self, wave: np.ndarray) -> np.ndarray:
        mel, mask, _ = self._padded_mel(wave)
        return np.asarray(self._speaker_fn(self.network_params("speaker"), mel, mask)[0])

    def analyze(self, wave: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(codes, speaker embedding) of one clip from one log-mel: `encode` and
        `speaker_embedding` at once (encoding a corpus)."""
        mel, mask, frames = self._padded_mel(wave)
        codes = self._indices_fn(self.network_params("tokenizer"), mel, mask)
        embedding = self._speaker_fn(self.network_params("speaker"), mel, mask)
        return (np.asarray(codes[0, :-(-frames // 4)], np.int32),
                np.asarray(embedding[0], np.float32))

    # ------------------------------------------------------------------ synthesis

    def check_codes(self, codes: np.ndarray, source: str = "codes") -> np.ndarray:
        codes = np.asarray(codes)
        num = self.cfg.fsq.num_codes
        if codes.ndim != 1:
            raise ValueError(f"{source}: shape: expected a 1-D array of codes, got shape "
                             f"{codes.shape}")
        if codes.size == 0:
            raise ValueError(f"{source}: length: expected at least 1 code, got 0")
        if not np.issubdtype(codes.dtype, np.integer):
            raise ValueError(f"{source}: dtype: expected integer codes, got {codes.dtype}")
        if codes.min() < 0 or codes.max() >= num:
            raise ValueError(f"{source}: values: expected codes in [0, {num}), got range "
                             f"[{codes.min()}, {codes.max()}]")
        return codes.astype(np.int32)

    def resolve_speaker(self, speaker: np.ndarray | str | None) -> np.ndarray:
        """An embedding, a training voice name, or None (the first training voice)."""
        if speaker is None:
            if not self.voices:
                raise ValueError("speaker: expected an embedding (no voices.json in workdir)")
            return next(iter(self.voices.values()))
        if isinstance(speaker, str):
            if speaker not in self.voices:
                raise ValueError(f"speaker: expected one of {sorted(self.voices)}, got "
                                 f"{speaker!r}")
            return self.voices[speaker]
        emb = np.asarray(speaker, np.float32)
        if emb.shape != (self.cfg.speaker.embed_dim,) or not np.all(np.isfinite(emb)):
            raise ValueError(f"speaker: expected a finite ({self.cfg.speaker.embed_dim},) "
                             f"embedding, got shape {emb.shape}")
        return emb

    def flow_settings(self, steps: int | None, guidance: float | None) -> tuple[int, float]:
        steps = self.cfg.flow.sample_steps if steps is None else int(steps)
        guidance = self.cfg.flow.guidance if guidance is None else float(guidance)
        if steps < 1:
            raise ValueError(f"steps: expected >= 1 Euler steps, got {steps}")
        if guidance < 0:
            raise ValueError(f"guidance: expected >= 0, got {guidance}")
        return steps, guidance

    def _sample_fn(self, steps: int, guidance: float):
        if (steps, guidance) not in self._sample_fns:
            schedule, n_mels = self.cfg.flow.time_schedule, self.cfg.mel.n_mels

            def run(params, codes, cmask, spk, key):
                noise = flow.frame_noise(key, 0, codes.shape[1], n_mels)[None]
                return flow.sample(self.models.flow, params, codes, cmask, spk, noise, steps,
                                   guidance, schedule)

            self._sample_fns[(steps, guidance)] = jit(run)
        return self._sample_fns[(steps, guidance)]

    def decode_mel(self, codes: np.ndarray, speaker=None, steps: int | None = None,
                   guidance: float | None = None, seed: int = 0) -> np.ndarray:
        """Codes (N,) -> normalized log-mel (4N, n_mels) by flow matching."""
        codes = self.check_codes(codes)
        spk = self.resolve_speaker(speaker)
        steps, guidance = self.flow_settings(steps, guidance)
        n = codes.size
        padded, cmask = pad_batch([codes], round_up(n, CODES_PER_BUCKET))
        out = self._sample_fn(steps, guidance)(self.network_params("flow"), padded, cmask,
                                               jnp.asarray(spk)[None], jax.random.PRNGKey(seed))
        return np.asarray(out[0, :4 * n])

    @functools.cached_property
    def _vocode_fn(self):
        return jit(lambda p, m, k: self.models.vocoder.apply({"params": p}, m, k))

    def vocode(self, mel_norm: np.ndarray, vocoder: str = "neural") -> np.ndarray:
        """Normalized log-mel (T, n_mels) -> waveform (T * hop,)."""
        frames = mel_norm.shape[0]
        if vocoder == "griffin-lim":
            return griffin_lim(self.cfg.mel.denormalize(mel_norm), self.cfg.mel,
                               self.cfg.vocoder.griffin_lim_iters)
        if vocoder != "neural":
            raise ValueError(f"vocoder: expected 'neural' or 'griffin-lim', got {vocoder!r}")
        padded, mask = pad_batch([np.asarray(mel_norm, np.float32)],
                                 round_up(frames, 4 * CODES_PER_BUCKET))
        wave = self._vocode_fn(self.network_params("vocoder"), padded, mask)
        return np.asarray(wave[0, :frames * self.cfg.mel.hop_length])

    def decode(self, codes: np.ndarray, speaker=None, steps: int | None = None,
               guidance: float | None = None, seed: int = 0,
               vocoder: str = "neural") -> np.ndarray:
        """Codes (N,) -> waveform (N * 640,) at 16 kHz."""
        return self.vocode(self.decode_mel(codes, speaker, steps, guidance, seed), vocoder)

    def stream(self, speaker=None, steps: int | None = None, guidance: float | None = None,
               seed: int = 0, streaming_cfg=None):
        from chorus.codec.streaming import StreamingDetokenizer

        return StreamingDetokenizer(self, speaker, steps, guidance, seed,
                                    streaming_cfg or self.cfg.streaming)
