"""`chorus codec train`: corpus -> mel stats -> speaker encoder -> tokenizer -> flow -> vocoder.

Everything lands in WORKDIR/codec/: codec_config.json, corpus/*.npz, mel_stats.npz,
<stage>.ckpt (+ <stage>.log.jsonl), voices.json (mean embedding per training voice) and
train_summary.json. Re-running resumes: finished stages are skipped.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from chorus import atomic
from chorus.codec import text
from chorus.codec.config import CodecConfig, ConfigError
from chorus.codec.corpus import prepare_corpus
from chorus.codec.features import MelStats, clip_log_mel, pad_batch, round_up
from chorus.codec.flow import flow_loss
from chorus.codec.models import CodecModels, init_params
from chorus.codec.pipeline import Codec, codec_dir
from chorus.codec.speaker import init_classifier, speaker_loss
from chorus.codec.tokenizer import tokenizer_loss
from chorus.codec.train_loop import Stage, run_stage
from chorus.codec.vocoder import vocoder_loss

LENGTH_BUCKET = 80  # mel frames; batches pad to a multiple of this (few compiled shapes)


def write_or_check_config(folder: str, cfg: CodecConfig) -> None:
    path = os.path.join(folder, "codec_config.json")
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            old = CodecConfig.from_json(f.read())
        if old != cfg:
            diff = _diff(old.to_dict(), cfg.to_dict())
            raise ConfigError(f"{path}: expected the same config to resume this workdir, got "
                              f"changes in {diff}; use a fresh --workdir")
        return
    atomic.write_text(path, cfg.to_json() + "\n")


def _diff(a: dict, b: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _diff(va, vb, f"{prefix}{key}.")
        elif va != vb:
            out.append(f"{prefix}{key}")
    return out


def _ctc_feasible(labels: np.ndarray, num_codes: int) -> bool:
    repeats = int(np.sum(labels[1:] == labels[:-1])) if labels.size > 1 else 0
    return labels.size > 0 and num_codes >= labels.size + repeats


def train_codec(cfg: CodecConfig, workdir: str, data_dir: str | None = None,
                log: Callable[[str], None] = print) -> dict:
    folder = codec_dir(workdir)
    os.makedirs(folder, exist_ok=True)
    write_or_check_config(folder, cfg)
    timings: dict[str, float] = {}
    began = time.perf_counter()

    corpus = prepare_corpus(os.path.join(folder, "corpus"), cfg.corpus, cfg.mel.sample_rate,
                            cfg.mel.samples_per_code, data_dir)
    train = corpus["train"]
    log(f"corpus: {len(train)} train utterances ({train.seconds / 60:.1f} min), "
        f"{len(corpus['eval'])} eval, {len(corpus['eval_unseen'])} eval_unseen")
    mels = [clip_log_mel(w, cfg.mel) for w in train.waves]
    stats_path = os.path.join(folder, "mel_stats.npz")
    if os.path.isfile(stats_path):
        stats = MelStats.load(stats_path)
    else:
        stats = MelStats.from_frames(mels)
        stats.save(stats_path)
    norm = [stats.normalize(m).astype(np.float32) for m in mels]
    timings["corpus_and_features"] = time.perf_counter() - began

    models = CodecModels.build(cfg)
    voices = sorted(set(train.speakers))
    voice_ids = np.asarray([voices.index(s) for s in train.speakers], np.int32)
    params: dict = {}

    def stage(name: str, train_cfg, loss_fn, next_batch, init=None) -> None:
        t = time.perf_counter()
        init = init or (lambda key: init_params(models, cfg, name, key))
        params[name] = run_stage(Stage(name, init, loss_fn, next_batch, train_cfg), folder,
                                 cfg.seed, log)
        timings[name] = time.perf_counter() - t

    # 1. Speaker encoder (CosFace over training voices) on random crops.
    spk_cfg = cfg.speaker

    def speaker_batch(rng: np.random.Generator) -> dict:
        idx = rng.integers(0, len(norm), spk_cfg.train.batch_size)
        crops = [_crop(norm[i], spk_cfg.crop_frames, rng, pad=False) for i in idx]
        mel, mask = pad_batch(crops, spk_cfg.crop_frames)
        return {"mel": mel, "mel_mask": mask, "speaker": voice_ids[idx]}

    def speaker_init(key):
        k1, k2 = jax.random.split(key)
        return {"encoder": init_params(models, cfg, "speaker", k1),
                "classifier": init_classifier(k2, len(voices), spk_cfg.embed_dim)}

    stage("speaker", spk_cfg.train, lambda p, b, r: speaker_loss(models.speaker, p, b),
          speaker_batch, init=speaker_init)
    params["speaker"] = params["speaker"]["encoder"]

    # 2. Tokenizer (CTC + reconstruction) on whole utterances that fit and are CTC-feasible.
    tok_cfg = cfg.tokenizer
    labels = [text.encode(t) for t in train.texts]
    keep = [i for i, m in enumerate(norm) if m.shape[0] <= tok_cfg.max_frames
            and _ctc_feasible(labels[i], -(-m.shape[0] // 4))]
    if not keep:
        raise ValueError(f"tokenizer: expected utterances of at most tokenizer.max_frames="
                         f"{tok_cfg.max_frames} frames with CTC-feasible transcripts, got none")
    log(f"tokenizer: {len(keep)}/{len(norm)} utterances fit max_frames and CTC")
    max_label = max(labels[i].size for i in keep)

    def tokenizer_batch(rng: np.random.Generator) -> dict:
        idx = rng.choice(keep, tok_cfg.train.batch_size)
        length = min(round_up(max(norm[i].shape[0] for i in idx), LENGTH_BUCKET),
                     tok_cfg.max_frames)
        mel, mask = pad_batch([norm[i] for i in idx], length)
        lab, lmask = pad_batch([labels[i] for i in idx], max_label)
        return {"mel": mel, "mel_mask": mask, "labels": lab, "label_mask": lmask}

    stage("tokenizer", tok_cfg.train,
          lambda p, b, r: tokenizer_loss(models.tokenizer, p, b, tok_cfg.reconstruction_weight),
          tokenizer_batch)

    # 3. Codes and speaker embeddings of the training set condition the flow (cached: they
    #    are a function of the finished tokenizer and speaker encoder).
    t = time.perf_counter()
    codes, embeddings = _analysis(folder, cfg, params, stats, train.waves)
    voice_means = {}
    for v in voices:
        mean = embeddings[[s == v for s in train.speakers]].mean(0)
        voice_means[v] = (mean / max(np.linalg.norm(mean), 1e-6)).tolist()
    atomic.write_json(os.path.join(folder, "voices.json"), voice_means)
    timings["analysis"] = time.perf_counter() - t

    # 4. Flow matching decoder.
    flow_cfg = cfg.flow

    def flow_batch(rng: np.random.Generator) -> dict:
        # Crops start on a code boundary so that mel frames and codes stay aligned.
        n = flow_cfg.crop_frames
        idx = rng.integers(0, len(norm), flow_cfg.train.batch_size)
        mels, code_rows = [], []
        for i in idx:
            num_codes = codes[i].size
            start = int(rng.integers(0, max(num_codes - n // 4, 0) + 1))
            mels.append(norm[i][4 * start:4 * start + n])
            code_rows.append(codes[i][start:start + n // 4])
        mel, mask = pad_batch(mels, n)
        code_batch, cmask = pad_batch(code_rows, n // 4)
        return {"mel": mel, "mel_mask": mask, "codes": code_batch, "code_mask": cmask,
                "speaker": embeddings[idx]}

    stage("flow", flow_cfg.train, lambda p, b, r: flow_loss(models.flow, p, b, r), flow_batch)

    # 5. Vocoder on random waveform crops (its input mel is computed in-graph from the crop).
    voc_cfg = cfg.vocoder
    seg = voc_cfg.segment_frames * cfg.mel.hop_length
    mean, std = jnp.asarray(stats.mean), jnp.asarray(stats.std)

    def vocoder_batch(rng: np.random.Generator) -> dict:
        idx = rng.integers(0, len(train), voc_cfg.train.batch_size)
        return {"wave": np.stack([_crop(train.waves[i], seg, rng) for i in idx])}

    stage("vocoder", voc_cfg.train,
          lambda p, b, r: vocoder_loss(models.vocoder, p, b, cfg.mel, mean, std), vocoder_batch)

    timings["total"] = time.perf_counter() - began
    summary = {"preset": cfg.name, "seconds": {k: round(v, 1) for k, v in timings.items()},
               "train_utterances": len(train), "train_minutes": round(train.seconds / 60, 2),
               "voices": voices}
    atomic.write_json(os.path.join(folder, "train_summary.json"), summary)
    log(f"codec trained in {timings['total']:.0f} s: {folder}")
    return summary


def _analysis(folder: str, cfg: CodecConfig, params: dict, stats: MelStats,
              waves: list[np.ndarray]) -> tuple[list[np.ndarray], np.ndarray]:
    path = os.path.join(folder, "analysis.npz")
    if os.path.isfile(path):
        with np.load(path) as data:
            bounds = np.concatenate([[0], np.cumsum(data["lengths"])])
            codes = [data["codes"][a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
            if len(codes) == len(waves):
                return codes, data["embeddings"]
    analysis = Codec(cfg, params, stats)
    codes = [analysis.encode(w) for w in waves]
    embeddings = np.stack([analysis.speaker_embedding(w) for w in waves])
    atomic.write_npz(path, codes=np.concatenate(codes),
                     lengths=np.asarray([c.size for c in codes]), embeddings=embeddings)
    return codes, embeddings


def _crop(array: np.ndarray, length: int, rng: np.random.Generator,
          pad: bool = True) -> np.ndarray:
    """A random window of `length` along axis 0; a shorter array is returned whole (padded)."""
    if array.shape[0] <= length:
        if not pad:
            return array
        out = np.zeros((length, *array.shape[1:]), array.dtype)
        out[:array.shape[0]] = array
        return out
    start = int(rng.integers(0, array.shape[0] - length + 1))
    return array[start:start + length]


def load_summary(workdir: str) -> dict:
    with open(os.path.join(codec_dir(workdir), "train_summary.json"), encoding="utf-8") as f:
        return json.load(f)
