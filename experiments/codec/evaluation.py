"""`chorus codec eval`: resynthesis quality, content, speaker, rate and speed of a trained codec.

Clips: the run's dataset (its config's experiment.data_dir, or --data). Held-out sentences of
the training voices are the records of `eval_splits` (default test, then validation) whose
voice is not held out; the held-out voices' clips are their records in every split.

On the first `limit` held-out-sentence clips, each clip is encoded to codes and decoded back
with the speaker embedding of the original clip; then:
  mel L1 / MCD      log-mel of the resynthesized wave vs the original (time-aligned frames)
  CER               CTC head transcript of the resynthesized wave vs the text (and of the
                    original wave, for reference), `chorus.eval.text_metrics.error_rates`
  speaker SIM       cosine of speaker embeddings, resynthesized vs original
  codes per second, real-time factor (encode; flow + vocoder decode; jitted, warm)
for the neural vocoder and the Griffin-Lim baseline, plus vocoder-only copy synthesis
(ground-truth mel -> wave). The speaker encoder's EER is measured on all pairs of the
held-out-sentence clips of the training voices (seen voices) and of the held-out voices'
clips (unseen voices). Streaming reports the first-chunk compute latency and the worst
streamed-vs-offline difference.

Writes W/eval.json and W/eval.md.
"""

from __future__ import annotations

import dataclasses
import os
import time

import numpy as np

from chorus import atomic
from chorus.codec.features import round_up
from chorus.codec.pipeline import CODES_PER_BUCKET, Codec
from chorus.codec.speaker import cosine, equal_error_rate, trial_scores
from chorus.config import settings_from
from chorus.eval.audio_metrics import mel_cepstral_distortion
from chorus.eval.text_metrics import error_rates
from chorus.progress import progress
from chorus.training.restore import resolve_run_dir
from chorus.training.run_config import read_run_config
from data_pipelines.sources import open_source
from experiments.codec.corpus_codes import encodable_records
from experiments.codec.settings import CodecSettings

VOCODERS = ("neural", "griffin-lim")
DEFAULT_LIMIT = 96  # resynthesized clips (the published cpu-tiny figures used 96)


@dataclasses.dataclass
class Clips:
    waves: list[np.ndarray] = dataclasses.field(default_factory=list)
    texts: list[str] = dataclasses.field(default_factory=list)
    speakers: list[str] = dataclasses.field(default_factory=list)

    def add(self, wave: np.ndarray, text: str, speaker: str) -> None:
        self.waves.append(wave)
        self.texts.append(text)
        self.speakers.append(speaker)

    def __len__(self) -> int:
        return len(self.waves)


def read_clips(settings: CodecSettings, data_dir: str,
               min_samples: int) -> tuple[Clips, Clips]:
    """(held-out sentences of the training voices, clips of the held-out voices)."""
    seen, unseen = Clips(), Clips()
    heldout = settings.heldout_speaker_ids
    splits = [*settings.eval_splits, settings.train_split]
    for split in splits:
        for record in encodable_records(open_source(settings.dataset, data_dir, split),
                                        min_samples):
            if record.speaker in heldout:
                unseen.add(record.wave, record.text, record.speaker)
            elif split in settings.eval_splits:
                seen.add(record.wave, record.text, record.speaker)
    if not seen:
        raise ValueError(f"dataset {settings.dataset!r} in {data_dir}: splits "
                         f"{list(settings.eval_splits)}: expected clips of training voices, "
                         f"got none")
    return seen, unseen


def _aligned_metrics(codec: Codec, ref_mel: np.ndarray, wave: np.ndarray) -> tuple[float, float]:
    hyp = codec.log_mel(wave)
    n = min(ref_mel.shape[0], hyp.shape[0])
    l1 = float(np.mean(np.abs(ref_mel[:n] - hyp[:n])))
    return l1, mel_cepstral_distortion(ref_mel[:n], hyp[:n])


def _warm_up(codec: Codec, waves: list[np.ndarray]) -> None:
    """Compiles every length bucket once so timings measure steady-state speed."""
    spc = codec.cfg.mel.samples_per_code
    buckets = sorted({round_up(-(-w.size // spc), CODES_PER_BUCKET) for w in waves})
    for num_codes in buckets:
        wave = np.zeros(num_codes * spc - spc // 2, np.float32)
        wave[::97] = 0.1
        codes = codec.encode(wave)
        codec.speaker_embedding(wave)
        codec.transcribe_codes(codes)
        codec.decode(codes)


def run_settings(run_dir: str) -> CodecSettings:
    """The codec settings a run was trained with (its last stage's config)."""
    config = read_run_config(resolve_run_dir(run_dir))
    return settings_from(CodecSettings, config.experiment)


def run_data_dir(run_dir: str, settings: CodecSettings, data_dir: str | None = None) -> str:
    """The dataset directory for a trained run: `data_dir` (--data), else the one it was
    trained on (its experiment.data_dir), checked to exist."""
    path = os.path.expanduser(data_dir or settings.data_dir)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{run_dir}: its dataset directory {path!r} (experiment."
                                f"data_dir) is gone; pass --data DIR")
    return path


def evaluate_codec(run_dir: str, limit: int | None = DEFAULT_LIMIT,
                   data_dir: str | None = None) -> dict:
    codec = Codec.load(run_dir)
    settings = run_settings(run_dir)
    data_dir = run_data_dir(run_dir, settings, data_dir)
    evalset, unseen = read_clips(settings, data_dir, codec.min_samples)
    n = len(evalset) if limit is None else min(limit, len(evalset))
    sr = codec.cfg.mel.sample_rate
    _warm_up(codec, evalset.waves[:n])
    # The originals' speaker embeddings: the resynthesis reference and the seen-voice EER's.
    seen_embeddings = _embeddings(codec, evalset)

    rows = {v: {"mel_l1": [], "mcd": [], "sim": [], "hyp": []} for v in (*VOCODERS, "copy")}
    refs, orig_hyps = [], []
    seconds = {"audio": 0.0, "encode": 0.0, "flow": 0.0, "neural": 0.0, "griffin-lim": 0.0}
    total_codes = 0
    with progress(n, "codec eval", "clip") as bar:
        for i in range(n):
            wave, ref_text = evalset.waves[i], evalset.texts[i]
            ref_mel = codec.log_mel(wave)
            spk = seen_embeddings[i]
            seconds["audio"] += wave.size / sr
            t = time.perf_counter()
            codes = codec.encode(wave)
            seconds["encode"] += time.perf_counter() - t
            total_codes += codes.size
            t = time.perf_counter()
            mel_norm = codec.decode_mel(codes, spk)
            seconds["flow"] += time.perf_counter() - t
            refs.append(ref_text)
            orig_hyps.append(codec.transcribe_codes(codes))
            outputs = {}
            for voc in VOCODERS:
                t = time.perf_counter()
                outputs[voc] = codec.vocode(mel_norm, voc)
                seconds[voc] += time.perf_counter() - t
            outputs["copy"] = codec.vocode(codec.cfg.mel.normalize(ref_mel), "neural")
            for name, out in outputs.items():
                l1, mcd = _aligned_metrics(codec, ref_mel, out)
                row = rows[name]
                row["mel_l1"].append(l1)
                row["mcd"].append(mcd)
                row["sim"].append(float(cosine(spk, codec.speaker_embedding(out))))
                row["hyp"].append(codec.transcribe(out))
            bar.update(1)

    audio = seconds["audio"]
    results: dict = {
        "run_dir": os.path.abspath(run_dir),
        "utterances": n,
        "audio_seconds": round(audio, 2),
        "codes_per_second": round(total_codes / audio, 3),
        "num_codes": codec.cfg.fsq.num_codes,
        "cer_original": round(error_rates(refs, orig_hyps)["cer"], 4),
        "rtf_encode": round(seconds["encode"] / audio, 4),
        "resynthesis": {},
    }
    for name, row in rows.items():
        entry = {"mel_l1": round(float(np.mean(row["mel_l1"])), 4),
                 "mcd_db": round(float(np.mean(row["mcd"])), 3),
                 "speaker_similarity": round(float(np.mean(row["sim"])), 4),
                 "cer": round(error_rates(refs, row["hyp"])["cer"], 4)}
        if name in VOCODERS:
            entry["rtf_decode"] = round((seconds["flow"] + seconds[name]) / audio, 4)
        results["resynthesis"][name] = entry
    results["speaker"] = speaker_metrics(codec, {"seen_voices": evalset,
                                                 "unseen_voices": unseen},
                                         {"seen_voices": seen_embeddings})
    results["streaming"] = streaming_metrics(codec, evalset.waves[0])
    results["examples"] = [{"text": refs[i], "original": orig_hyps[i],
                            "resynthesis": rows[VOCODERS[0]]["hyp"][i]}
                           for i in range(min(4, n))]
    atomic.write_json(os.path.join(run_dir, "eval.json"), results)
    atomic.write_text(os.path.join(run_dir, "eval.md"), to_markdown(results))
    return results


def _embeddings(codec: Codec, clips: Clips) -> np.ndarray:
    """(len(clips), E) speaker embeddings of the clips."""
    return np.stack([codec.speaker_embedding(w) for w in clips.waves])


def speaker_metrics(codec: Codec, sets: dict[str, Clips],
                    embeddings: dict[str, np.ndarray] | None = None) -> dict:
    """EER over all pairs of each set's clips (sets without target and impostor trials are
    left out: they need >= 2 voices and a voice with >= 2 clips). embeddings: those already
    computed, per set name (the others are computed here)."""
    embeddings = embeddings or {}
    out = {}
    for name, clips in sets.items():
        if len(set(clips.speakers)) < 2:
            continue
        emb = embeddings[name] if name in embeddings else _embeddings(codec, clips)
        scores, same = trial_scores(emb, clips.speakers)
        if same.all() or not same.any():
            continue
        eer, _ = equal_error_rate(scores, same)
        out[name] = {"eer": round(eer, 4), "utterances": len(clips),
                     "voices": len(set(clips.speakers)), "target_trials": int(same.sum()),
                     "mean_target_cosine": round(float(scores[same].mean()), 4),
                     "mean_impostor_cosine": round(float(scores[~same].mean()), 4)}
    return out


def streaming_metrics(codec: Codec, wave: np.ndarray) -> dict:
    cfg = codec.cfg
    codes = codec.encode(wave)
    spk = codec.speaker_embedding(wave)
    offline = codec.decode(codes, spk)
    warm = codec.stream(spk)  # compiles the chunk functions
    warm.push(codes)
    warm.flush()
    stream = codec.stream(spk)
    first = stream.algorithmic_latency_codes
    t = time.perf_counter()
    out = [stream.push(codes[:first])]
    latency = time.perf_counter() - t
    out.append(stream.push(codes[first:]))
    out.append(stream.flush())
    streamed = np.concatenate(out)
    ms_per_code = 1000.0 / (cfg.mel.sample_rate / cfg.mel.samples_per_code)
    return {
        "chunk_codes": cfg.streaming.chunk_codes,
        "codes_before_first_chunk": first,
        "lookahead_ms": round((cfg.flow.lookahead_codes * ms_per_code)
                              + cfg.streaming.vocoder_lookahead_frames * 1000.0
                              * cfg.mel.hop_length / cfg.mel.sample_rate, 1),
        "first_chunk_compute_ms": round(latency * 1000, 2),
        "first_chunk_audio_ms": round(out[0].size * 1000.0 / cfg.mel.sample_rate, 1),
        "max_abs_diff_vs_offline": float(np.max(np.abs(streamed - offline))),
        "samples_equal_length": bool(streamed.size == offline.size),
    }


def to_markdown(r: dict) -> str:
    lines = [f"# Codec evaluation ({r['run_dir']})", "",
             f"{r['utterances']} held-out utterances ({r['audio_seconds']} s), "
             f"{r['num_codes']} codes at {r['codes_per_second']} codes/s; "
             f"CER of the CTC head on the original audio: {r['cer_original']:.3f}; "
             f"encode RTF {r['rtf_encode']}.", "",
             "| resynthesis | mel L1 | MCD (dB) | CER | speaker sim | RTF (decode) |",
             "|---|---|---|---|---|---|"]
    for name, e in r["resynthesis"].items():
        label = "vocoder only (GT mel)" if name == "copy" else f"codes -> flow -> {name}"
        lines.append(f"| {label} | {e['mel_l1']} | {e['mcd_db']} | {e['cer']} | "
                     f"{e['speaker_similarity']} | {e.get('rtf_decode', '-')} |")
    lines += ["", "| speaker encoder | EER | target cos | impostor cos | voices | clips |",
              "|---|---|---|---|---|---|"]
    for name, e in r["speaker"].items():
        lines.append(f"| {name} | {e['eer']} | {e['mean_target_cosine']} | "
                     f"{e['mean_impostor_cosine']} | {e['voices']} | {e['utterances']} |")
    s = r["streaming"]
    lines += ["", f"Streaming: chunks of {s['chunk_codes']} codes, first chunk after "
              f"{s['codes_before_first_chunk']} codes, lookahead {s['lookahead_ms']} ms, "
              f"first-chunk compute {s['first_chunk_compute_ms']} ms "
              f"({s['first_chunk_audio_ms']} ms of audio), max |streamed - offline| = "
              f"{s['max_abs_diff_vs_offline']:.2e}.", ""]
    return "\n".join(lines)
