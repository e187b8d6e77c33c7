"""`chorus codec eval`: resynthesis quality, content, speaker, rate and speed of a trained codec.

On the held-out sentences spoken by the training voices (split `eval`), each clip is encoded
to codes and decoded back with the speaker embedding of the original clip; then:
  mel L1 / MCD      log-mel of the resynthesized wave vs the original (time-aligned frames)
  CER               CTC head transcript of the resynthesized wave vs the text (and of the
                    original wave, for reference)
  speaker SIM       cosine of speaker embeddings, resynthesized vs original
  codes per second, real-time factor (encode; flow + vocoder decode; CPU, jitted, warm)
for the neural vocoder and the Griffin-Lim baseline, plus vocoder-only copy synthesis (ground
truth mel -> wave). The speaker encoder's EER is measured on all pairs of `eval` clips
(seen voices, unseen sentences) and of `eval_unseen` clips (unseen voices). Streaming
reports the first-chunk compute latency and the worst streamed-vs-offline difference.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import numpy as np

from chorus import atomic
from chorus.codec.corpus import Corpus
from chorus.codec.features import round_up
from chorus.codec.pipeline import CODES_PER_BUCKET, Codec, codec_dir
from chorus.codec.speaker import cosine, equal_error_rate, trial_scores
from chorus.eval.audio_metrics import mel_cepstral_distortion
from chorus.eval.text_metrics import error_rates

VOCODERS = ("neural", "griffin-lim")


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


def evaluate_codec(workdir: str, limit: int | None = None, vocoders=VOCODERS,
                   log: Callable[[str], None] = print) -> dict:
    codec = Codec.load(workdir)
    folder = codec_dir(workdir)
    evalset = Corpus.load(os.path.join(folder, "corpus", "eval.npz"))
    unseen = Corpus.load(os.path.join(folder, "corpus", "eval_unseen.npz"))
    n = len(evalset) if limit is None else min(limit, len(evalset))
    if n == 0:
        raise ValueError(f"{folder}/corpus/eval.npz: expected eval utterances, got none")
    sr = codec.cfg.mel.sample_rate
    _warm_up(codec, evalset.waves[:n])

    rows = {v: {"mel_l1": [], "mcd": [], "sim": [], "hyp": []} for v in (*vocoders, "copy")}
    refs, orig_hyps = [], []
    seconds = {"audio": 0.0, "encode": 0.0, "flow": 0.0, "neural": 0.0, "griffin-lim": 0.0}
    total_codes = 0
    # The eval split cycles through the voices per sentence, so a prefix covers every voice.
    order = list(range(n))
    for k, i in enumerate(order):
        wave, ref_text = evalset.waves[i], evalset.texts[i]
        ref_mel = codec.log_mel(wave)
        spk = codec.speaker_embedding(wave)
        seconds["audio"] += wave.size / sr
        t = time.perf_counter()
        codes = codec.encode(wave)
        seconds["encode"] += time.perf_counter() - t
        total_codes += codes.size
        t = time.perf_counter()
        mel_norm = codec.decode_mel(codes, spk)
        seconds["flow"] += time.perf_counter() - t
        refs.append(ref_text)
        orig_hyps.append(codec.transcribe(wave))
        outputs = {}
        for voc in vocoders:
            t = time.perf_counter()
            outputs[voc] = codec.vocode(mel_norm, voc)
            seconds[voc] += time.perf_counter() - t
        outputs["copy"] = codec.vocode(codec.stats.normalize(ref_mel), "neural")
        for name, out in outputs.items():
            l1, mcd = _aligned_metrics(codec, ref_mel, out)
            row = rows[name]
            row["mel_l1"].append(l1)
            row["mcd"].append(mcd)
            row["sim"].append(float(cosine(spk, codec.speaker_embedding(out))))
            row["hyp"].append(codec.transcribe(out))
        if (k + 1) % 20 == 0:
            log(f"eval: {k + 1}/{n} utterances")

    audio = seconds["audio"]
    results: dict = {
        "preset": codec.cfg.name,
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
        if name in vocoders:
            entry["rtf_decode"] = round((seconds["flow"] + seconds[name]) / audio, 4)
        results["resynthesis"][name] = entry
    results["speaker"] = _speaker_metrics(codec, evalset, unseen)
    results["streaming"] = _streaming_metrics(codec, evalset.waves[order[0]])
    results["examples"] = [{"text": refs[i], "original": orig_hyps[i],
                            "resynthesis": rows[vocoders[0]]["hyp"][i]}
                           for i in range(min(4, n))]
    atomic.write_json(os.path.join(folder, "eval.json"), results)
    atomic.write_text(os.path.join(folder, "eval.md"), to_markdown(results, codec.cfg.name))
    return results


def _speaker_metrics(codec: Codec, evalset: Corpus, unseen: Corpus) -> dict:
    out = {}
    for name, corpus in (("seen_voices", evalset), ("unseen_voices", unseen)):
        if len(set(corpus.speakers)) < 2:
            continue
        emb = np.stack([codec.speaker_embedding(w) for w in corpus.waves])
        scores, same = trial_scores(emb, corpus.speakers)
        if same.all() or not same.any():
            continue  # EER needs both target and impostor trials (>= 2 sentences per voice)
        eer, _ = equal_error_rate(scores, same)
        out[name] = {"eer": round(eer, 4), "utterances": len(corpus),
                     "voices": len(set(corpus.speakers)),
                     "mean_target_cosine": round(float(scores[same].mean()), 4),
                     "mean_impostor_cosine": round(float(scores[~same].mean()), 4)}
    return out


def _streaming_metrics(codec: Codec, wave: np.ndarray) -> dict:
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


def to_markdown(r: dict, preset: str) -> str:
    lines = [f"# Codec evaluation ({preset})", "",
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
    lines += ["", "| speaker encoder | EER | target cos | impostor cos | voices |",
              "|---|---|---|---|---|"]
    for name, e in r["speaker"].items():
        lines.append(f"| {name} | {e['eer']} | {e['mean_target_cosine']} | "
                     f"{e['mean_impostor_cosine']} | {e['voices']} |")
    s = r["streaming"]
    lines += ["", f"Streaming: chunks of {s['chunk_codes']} codes, first chunk after "
              f"{s['codes_before_first_chunk']} codes, lookahead {s['lookahead_ms']} ms, "
              f"first-chunk compute {s['first_chunk_compute_ms']} ms "
              f"({s['first_chunk_audio_ms']} ms of audio), max |streamed - offline| = "
              f"{s['max_abs_diff_vs_offline']:.2e}.", ""]
    return "\n".join(lines)
