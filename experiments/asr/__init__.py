"""ASR: speech in, transcript out. One regime of the shared backbone, top to bottom:

    data     a prepared speech dataset (default `chorus_speech`, made by `chorus data synth`)
             -> data_pipelines' packed ASR batches (the batch contract of docs/data.md)
    prompt   <asr> <audio>xN <transcript>        N = one placeholder per 80 ms of audio
    target   text ... <eos>                      loss_mask marks exactly these positions
    loss     next-token cross-entropy on the target positions + lambda/k * sum_j CE_j of the
             k multi-token-prediction (MTP) heads (`experiment.mtp`) + ctc_weight * CTC of
             the transcript over the audio adaptor frames (`experiment.ctc_weight`)
    decode   verified multi-token decoding: the MTP heads draft k tokens, one backbone forward
             verifies them; output identical to greedy decoding (chorus.decoding)
    rewards  -WER, -CER, exact match (plain callables for chorus.rl)
    eval     WER / CER on the test and compositional splits, accepted tokens per step,
             decoder forwards per token, verified-vs-greedy wall-clock at batch 1 and 8, RTF

    chorus train --experiment asr --preset cpu-tiny --workdir runs/asr --data DATA_DIR
    chorus eval  --workdir runs/asr
    chorus transcribe --workdir runs/asr speech.wav

Settings (`--set experiment.<key>=...`): see `AsrSettings`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from chorus.config import Config, ConfigError
from chorus.decoding.verified import decode_stats, greedy_decode, verified_decode
from chorus.eval.text_metrics import error_rates
from chorus.model import heads as mtp_heads
from chorus.model.ctc import CtcHead, clip_transcripts, ctc_loss
from chorus.model.factory import example_batch
from chorus.model.flops import backbone_train_flops
from chorus.model.losses import cross_entropy, token_accuracy
from chorus.model.unified import UnifiedAudioLM
from chorus.training.evaluation import evaluate_loss
from chorus.training.experiment import Experiment
from chorus.vocab import VocabLayout
from experiments.asr.regime import AsrRegime, asr_prompt

# The verbs this mode adds to the `chorus` command (read by chorus.cli without importing us).
COMMANDS = {"transcribe": ("experiments.asr:transcribe_main", "transcribe audio files")}

# ----------------------------------------------------------------------------- settings


DEFAULT_MTP = {"design": "parallel", "num_heads": 4, "loss_weight": 0.3}


@dataclasses.dataclass(frozen=True)
class AsrSettings:
    """The experiment's own config extras (config.experiment)."""

    data_dir: str
    dataset: str = "chorus_speech"
    train_split: str = "train"
    eval_split: str = "validation"
    data_workers: int = 0  # grain worker processes per host (0 = in the training process)
    asr_target: str = "raw"  # "normalized": train on normalize_text(transcript)
    # Multi-token prediction: {"design": "parallel"|"sequential", "num_heads": k,
    # "loss_weight": lambda}, each key over DEFAULT_MTP (so `--set experiment.mtp.num_heads=2`
    # keeps the design); null trains the plain backbone (decoding is then greedy only).
    mtp: Mapping[str, Any] | None = dataclasses.field(default_factory=dict)
    # SpecAugment of the training log-mel (chorus.audio.spec_augment.SpecAugmentConfig
    # fields); null = off. Evaluation never augments.
    spec_augment: Mapping[str, Any] | None = dataclasses.field(
        default_factory=lambda: {"num_freq_masks": 2, "max_freq_width": 16,
                                 "num_time_masks": 2, "max_time_fraction": 0.08})
    # Weight of the CTC loss over the audio adaptor frames (chorus.model.ctc); 0 = off.
    # Without it the from-scratch cpu-tiny model learns to ignore the audio.
    ctc_weight: float = 1.0
    # "joint": backbone + heads; "heads": a second stage on a frozen backbone.
    mtp_stage: str = "joint"
    # A run directory whose latest checkpoint initializes the backbone (an ASR run: its
    # "backbone"; an RL run: its policy). The heads stage needs one.
    backbone_from: str = ""
    eval_splits: tuple[str, ...] = ("test", "test_compositional")
    eval_examples: int = 200  # per split
    speed_examples: int = 32  # utterances timed for greedy-vs-verified wall-clock (0 = skip)

    def __post_init__(self):
        if not isinstance(self.data_dir, str) or not self.data_dir:
            raise ConfigError("experiment.data_dir: expected the dataset directory (--data DIR, "
                              f"e.g. made by `chorus data synth --out DIR`), got "
                              f"{self.data_dir!r}")
        if not os.path.isdir(os.path.expanduser(self.data_dir)):
            raise ConfigError(f"experiment.data_dir: expected an existing directory, got "
                              f"{self.data_dir!r}")
        if self.data_workers < 0:
            raise ConfigError(f"experiment.data_workers: expected >= 0, got "
                              f"{self.data_workers}")
        if self.asr_target not in ("raw", "normalized"):
            raise ConfigError(f"experiment.asr_target: expected 'raw' or 'normalized', got "
                              f"{self.asr_target!r}")
        if not isinstance(self.ctc_weight, int | float) or self.ctc_weight < 0:
            raise ConfigError(f"experiment.ctc_weight: expected a number >= 0, got "
                              f"{self.ctc_weight!r}")
        if self.spec_augment is not None:
            try:
                _ = self.spec_augment_config
            except (TypeError, ValueError) as e:
                raise ConfigError(f"experiment.spec_augment: expected a mapping of "
                                  f"SpecAugmentConfig fields or null, got "
                                  f"{self.spec_augment!r} ({e})") from None
        if self.mtp_stage not in ("joint", "heads"):
            raise ConfigError(f"experiment.mtp_stage: expected 'joint' or 'heads', got "
                              f"{self.mtp_stage!r}")
        if self.mtp_stage == "heads" and not self.backbone_from:
            raise ConfigError("experiment.backbone_from: expected the run directory of the "
                              "trained backbone for mtp_stage='heads', got ''")
        if self.mtp is not None and not isinstance(self.mtp, Mapping):
            raise ConfigError(f"experiment.mtp: expected a mapping of MTP fields or null, got "
                              f"{self.mtp!r}")
        _ = self.mtp_config  # validates the merged fields now
        if self.mtp_stage == "heads" and self.mtp is None:
            raise ConfigError("experiment.mtp_stage: 'heads' trains MTP heads, but "
                              "experiment.mtp is null")
        if self.eval_examples < 1 or self.speed_examples < 0:
            raise ConfigError(f"experiment.eval_examples / speed_examples: expected >= 1 / >= 0,"
                              f" got {self.eval_examples} / {self.speed_examples}")
        object.__setattr__(self, "eval_splits", tuple(self.eval_splits))

    @property
    def spec_augment_config(self):
        from chorus.audio.spec_augment import SpecAugmentConfig

        return None if self.spec_augment is None else SpecAugmentConfig(**self.spec_augment)

    @property
    def mtp_config(self) -> mtp_heads.MTPConfig | None:
        if self.mtp is None:
            return None
        return mtp_heads.MTPConfig.from_mapping({**DEFAULT_MTP, **self.mtp})

    @classmethod
    def from_config(cls, extras: Mapping[str, Any]) -> AsrSettings:
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in extras.items() if k != "module"}  # module: chorus train's
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"experiment: unknown ASR setting(s) {unknown}; expected some of "
                              f"{sorted(known)}")
        values.setdefault("data_dir", "")
        return cls(**values)


# ----------------------------------------------------------------------------- data


def _iterator_args(config: Config, settings: AsrSettings, layout: VocabLayout) -> dict:
    t = config.train
    return dict(regime=AsrRegime(target=settings.asr_target),
                data_dir=os.path.expanduser(settings.data_dir), layout=layout,
                seq_len=t.seq_len, max_clips=t.max_audio_clips, max_frames=t.max_mel_frames,
                dataset_name=settings.dataset)


def make_data(config: Config, settings: AsrSettings, layout: VocabLayout):
    """(train_iterator, eval_iterator) factories: (shard_index, shard_count, seed) -> iterator.

    Each host reads its own records and builds batch_size // shard_count rows of the batch.
    """
    from data_pipelines import make_train_iterator

    base = _iterator_args(config, settings, layout)

    def train_iterator(shard_index: int, shard_count: int, seed: int):
        return make_train_iterator(
            split=settings.train_split, batch_size=config.train.batch_size // shard_count,
            seed=seed, shard_index=shard_index, shard_count=shard_count,
            num_workers=settings.data_workers, **base)

    def eval_iterator(shard_index: int, shard_count: int, seed: int):
        # One ordered pass: the same eval batches every time.
        return make_train_iterator(
            split=settings.eval_split, batch_size=config.train.batch_size // shard_count,
            seed=seed, shard_index=shard_index, shard_count=shard_count, num_epochs=1,
            shuffle=False, **base)

    return train_iterator, eval_iterator


# ----------------------------------------------------------------------------- model + loss


@dataclasses.dataclass(frozen=True)
class AsrModel:
    """The backbone, its MTP heads and CTC head (each optional beyond the backbone);
    params = {"backbone", "mtp"?, "ctc"?}."""

    backbone: UnifiedAudioLM
    heads: Any  # flax module or None
    mtp: mtp_heads.MTPConfig | None
    ctc_head: CtcHead | None = None
    ctc_weight: float = 0.0
    spec_augment: Any = None  # SpecAugmentConfig applied by loss_fn(augment=True)

    @classmethod
    def build(cls, config: Config, settings: AsrSettings) -> AsrModel:
        mtp = settings.mtp_config
        heads = None if mtp is None else mtp_heads.build_mtp(config.model, mtp)
        ctc_head = CtcHead(config.model.text_vocab_size) if settings.ctc_weight > 0 else None
        return cls(UnifiedAudioLM(config), heads, mtp, ctc_head, settings.ctc_weight,
                   settings.spec_augment_config)

    def init_fn(self, config: Config):
        """rng -> boxed params (logical axis names on the leaves; the trainer shards)."""
        b = example_batch(config, 1, 8)

        def init_fn(rng):
            backbone_rng, heads_rng, ctc_rng = jax.random.split(rng, 3)
            params = {"backbone": self.backbone.init(
                backbone_rng, b["tokens"], b["positions"], b["segment_ids"],
                b["audio_features"], b["audio_mask"])["params"]}
            if self.heads is not None:
                params["mtp"] = mtp_heads.init_boxed(self.heads, config, heads_rng)
            if self.ctc_head is not None:
                params["ctc"] = self.ctc_head.init(
                    ctc_rng, jnp.zeros((1, 8, config.model.d_model)))["params"]
            return params

        return init_fn

    def loss_fn(self, train_backbone: bool = True, augment: bool = False):
        """Transcript CE + MTP (lambda/k * sum_j CE_j) + ctc_weight * CTC over the adaptor
        frames. train_backbone=False (second-stage heads): the backbone is a constant and the
        loss is the MTP loss alone. augment: SpecAugment the log-mel with the step's rng (the
        training loss; evaluation uses augment=False). Metrics include token accuracy per
        depth."""
        from chorus.audio.spec_augment import spec_augment

        layout = VocabLayout.from_model_config(self.backbone.config.model)

        def loss_fn(params, batch, rng):
            if augment and self.spec_augment is not None:
                b, a, t, n = batch["audio_features"].shape
                feats = spec_augment(rng, batch["audio_features"].reshape(b * a, t, n),
                                     batch["audio_mask"].reshape(b * a, t), self.spec_augment)
                batch = {**batch, "audio_features": feats.reshape(b, a, t, n)}
            backbone = params["backbone"]
            if not train_backbone:
                backbone = jax.lax.stop_gradient(backbone)
            out = self.backbone.apply({"params": backbone}, batch["tokens"], batch["positions"],
                                      batch["segment_ids"], batch["audio_features"],
                                      batch["audio_mask"])
            ce, count = cross_entropy(out["logits"], batch["targets"], batch["loss_mask"])
            metrics = {"ce": jax.lax.stop_gradient(ce), "tokens": count,
                       "accuracy": jax.lax.stop_gradient(token_accuracy(
                           out["logits"], batch["targets"], batch["loss_mask"])),
                       # 0 when the data pipeline sized the <audio> placeholders to the clips
                       "audio_placeholder_excess": abs(out["audio_placeholder_excess"]).sum()}
            loss = ce if train_backbone else 0.0
            if self.heads is not None:
                extra, mtp_metrics = mtp_heads.mtp_loss(self.backbone, backbone, self.heads,
                                                        params["mtp"], out["hidden"], batch,
                                                        self.mtp)
                loss, metrics = loss + extra, {**metrics, **mtp_metrics}
            if self.ctc_head is not None and train_backbone:
                labels = clip_transcripts(
                    batch["tokens"], batch["targets"], batch["loss_mask"], batch["segment_ids"],
                    out["audio_frame_mask"], placeholder_id=layout.audio_placeholder_id,
                    text_size=layout.text_size)
                logits = self.ctc_head.apply({"params": params["ctc"]}, out["audio_frames"])
                ctc, ctc_metrics = ctc_loss(logits, out["audio_frame_mask"], labels)
                loss, metrics = loss + self.ctc_weight * ctc, {**metrics, **ctc_metrics}
            return loss, {**metrics, "loss": loss}

        return loss_fn


# ----------------------------------------------------------------------------- rewards


def neg_wer(hypotheses: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """Per-utterance -WER (verifiable reward for chorus.rl)."""
    return np.array([-error_rates([r], [h])["wer"] for h, r in zip(hypotheses, references,
                                                                    strict=True)])


def neg_cer(hypotheses: Sequence[str], references: Sequence[str]) -> np.ndarray:
    return np.array([-error_rates([r], [h])["cer"] for h, r in zip(hypotheses, references,
                                                                    strict=True)])


def exact_match(hypotheses: Sequence[str], references: Sequence[str]) -> np.ndarray:
    return np.array([error_rates([r], [h])["exact_match"] for h, r in zip(
        hypotheses, references, strict=True)])


# ----------------------------------------------------------------------------- decoding


def pad_requests(examples: Sequence[dict], layout: VocabLayout, max_frames: int) -> dict:
    """Right-pads prompts and clips to fixed shapes (one compile per batch size)."""
    width = len(asr_prompt(layout, max_frames))  # the longest prompt
    b = len(examples)
    prompts = np.full((b, width), layout.pad_id, np.int32)
    lengths = np.zeros((b,), np.int32)
    feats = np.zeros((b, 1, max_frames, examples[0]["audio_features"].shape[-1]), np.float32)
    mask = np.zeros((b, 1, max_frames), bool)
    for i, ex in enumerate(examples):
        p = np.asarray(ex["prompt_tokens"])
        prompts[i, : len(p)] = p
        lengths[i] = len(p)
        t = min(ex["audio_features"].shape[-2], max_frames)
        feats[i, 0, :t] = ex["audio_features"].reshape(-1, feats.shape[-1])[:t]
        mask[i, 0, :t] = np.asarray(ex["audio_mask"]).reshape(-1)[:t]
    return {"prompts": prompts, "lengths": lengths, "audio_features": feats, "audio_mask": mask}


class Transcriber:
    """Batched transcription with verified decoding (greedy when there are no MTP heads)."""

    def __init__(self, config: Config, asr: AsrModel, params, tokenizer):
        self.config, self.asr, self.params, self.tokenizer = config, asr, params, tokenizer
        self.layout = VocabLayout.from_model_config(config.model)
        k = asr.mtp.num_heads if asr.mtp is not None else 0
        self.settings = dataclasses.replace(config.decode, temperature=0.0, num_draft_tokens=k)

    def decode(self, request: dict, mode: str = "verified"):
        """mode: "verified" (greedy when there are no heads), "greedy", or "prefill" (encoder,
        prompt prefill and the first token only: the part both decoders share)."""
        if mode not in ("verified", "greedy", "prefill"):
            raise ValueError(f"mode: expected 'verified', 'greedy' or 'prefill', got {mode!r}")
        p = self.params
        args = (jnp.asarray(request["prompts"]), jnp.asarray(request["lengths"]))
        audio = dict(audio_features=jnp.asarray(request["audio_features"]),
                     audio_mask=jnp.asarray(request["audio_mask"]))
        if mode == "verified" and self.asr.heads is not None:
            return verified_decode(self.asr.backbone, p["backbone"], self.asr.heads, p["mtp"],
                                   *args, self.settings, **audio)
        return greedy_decode(self.asr.backbone, p["backbone"], *args,
                             max_new_tokens=1 if mode == "prefill" else
                             self.settings.max_new_tokens, **audio)

    def texts(self, result) -> list[str]:
        tokens, lengths = np.asarray(result.tokens), np.asarray(result.lengths)
        out = []
        for row, n in zip(tokens, lengths, strict=True):
            ids = [int(t) for t in row[:n] if t < self.layout.text_size]  # drops <eos>
            out.append(self.tokenizer.decode(ids))
        return out


def _timed(fn) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    jax.block_until_ready(out.tokens)
    return out, time.perf_counter() - start


def _batches(items: Sequence, size: int):
    for i in range(0, len(items), size):
        yield items[i: i + size]


def decode_eval(config: Config, settings: AsrSettings, asr: AsrModel, params,
                layout: VocabLayout) -> dict:
    """WER/CER per split with verified decoding (checked token-identical to greedy), acceptance
    and forwards per token, and greedy-vs-verified wall-clock at batch 1 and 8."""
    from data_pipelines import make_eval_iterator
    from data_pipelines.tokenizer import TextTokenizer

    data_dir = os.path.expanduser(settings.data_dir)
    tokenizer = TextTokenizer.from_file(os.path.join(data_dir, "tokenizer.model"))
    transcriber = Transcriber(config, asr, params, tokenizer)
    max_frames = config.train.max_mel_frames
    report: dict[str, Any] = {}
    timing_pool: list[dict] = []
    for split in settings.eval_splits:
        examples = list(make_eval_iterator(
            AsrRegime(target=settings.asr_target), data_dir, split, layout,
            dataset_name=settings.dataset, max_frames=max_frames, seq_len=config.train.seq_len,
            max_examples=settings.eval_examples))
        if not examples:
            raise ValueError(f"{data_dir}: split {split!r} has no usable ASR example")
        timing_pool = timing_pool or examples
        hyps, refs, identical, stats = [], [], 0, []
        audio_seconds = 0.0
        for chunk in _batches(examples, 8):
            request = pad_requests(chunk, layout, max_frames)
            verified = transcriber.decode(request, mode="verified")
            greedy = transcriber.decode(request, mode="greedy")
            same = np.all(np.asarray(verified.tokens) == np.asarray(greedy.tokens), axis=1)
            identical += int(same.sum())
            hyps += transcriber.texts(verified)
            refs += [ex["reference_text"] for ex in chunk]
            stats.append(decode_stats(verified))
            audio_seconds += float(request["audio_mask"].sum()) / 100.0
        rates = error_rates(refs, hyps)
        report[split] = {
            **rates,
            "identical_to_greedy": identical / len(examples),
            "tokens_per_step": float(np.mean([s["tokens_per_step"] for s in stats])),
            "forwards_per_token": float(np.mean([s["forwards_per_token"] for s in stats])),
            "audio_seconds": audio_seconds,
            "examples": [{"reference": r, "hypothesis": h} for r, h in
                         list(zip(refs, hyps, strict=True))[:5]],
        }
    if settings.speed_examples and asr.heads is not None:
        report["speed"] = speed_eval(transcriber, timing_pool[: settings.speed_examples],
                                     layout, max_frames)
    return report


SPEED_REPEATS = 3  # timed passes per mode; the fastest counts (CPU timings are noisy)


def speed_eval(transcriber: Transcriber, examples: Sequence[dict], layout: VocabLayout,
               max_frames: int) -> dict:
    """Greedy vs verified wall-clock on the same utterances, same run, compiled first.

    Also times the shared part alone (audio encoder + prompt prefill + first token:
    `mode="prefill"`), so the decode phase's own speedup is reported beside the end-to-end one.
    """
    rows = {}
    for batch_size in (1, 8):
        requests = [pad_requests(c, layout, max_frames) for c in _batches(examples, batch_size)
                    if len(c) == batch_size]
        if not requests:
            continue
        times = {}
        for mode in ("prefill", "greedy", "verified"):
            transcriber.decode(requests[0], mode=mode)  # compile
            passes = []
            for _ in range(SPEED_REPEATS):
                passes.append(sum(_timed(lambda r=request, m=mode: transcriber.decode(
                    r, mode=m))[1] for request in requests))
            times[mode] = min(passes)
        audio = sum(float(r["audio_mask"].sum()) / 100.0 for r in requests)
        decode_greedy = max(times["greedy"] - times["prefill"], 1e-9)
        decode_verified = max(times["verified"] - times["prefill"], 1e-9)
        rows[f"batch_{batch_size}"] = {
            "prefill_seconds": times["prefill"],
            "greedy_seconds": times["greedy"], "verified_seconds": times["verified"],
            "speedup": times["greedy"] / times["verified"],
            "decode_phase_speedup": decode_greedy / decode_verified,
            "rtf_verified": times["verified"] / audio, "rtf_greedy": times["greedy"] / audio,
            "utterances": len(requests) * batch_size}
    return rows


def report_markdown(report: dict) -> str:
    lines = ["| split | WER | CER | exact | tokens/step | forwards/token | = greedy |",
             "|---|---|---|---|---|---|---|"]
    for split, r in report.items():
        if split in ("speed", "loss", "accuracy", "batches") or not isinstance(r, dict):
            continue
        lines.append(f"| {split} | {r['wer']:.3f} | {r['cer']:.3f} | {r['exact_match']:.3f} | "
                     f"{r['tokens_per_step']:.2f} | {r['forwards_per_token']:.3f} | "
                     f"{r['identical_to_greedy']:.0%} |")
    if "speed" in report:
        lines += ["", "| batch | encoder + prefill s | greedy s | verified s | speedup | "
                  "decode-phase speedup | RTF (verified) |", "|---|---|---|---|---|---|---|"]
        for name, r in report["speed"].items():
            lines.append(f"| {name.split('_')[1]} | {r['prefill_seconds']:.2f} | "
                         f"{r['greedy_seconds']:.2f} | {r['verified_seconds']:.2f} | "
                         f"{r['speedup']:.2f}x | {r['decode_phase_speedup']:.2f}x | "
                         f"{r['rtf_verified']:.4f} |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- experiment


def build(config: Config) -> Experiment:
    if "algo" in config.experiment:  # set by `chorus rl`
        from experiments.asr.rl import build_rl

        return build_rl(config)
    settings = AsrSettings.from_config(config.experiment)
    layout = VocabLayout.from_model_config(config.model)
    asr = AsrModel.build(config, settings)
    loss_fn = asr.loss_fn(train_backbone=settings.mtp_stage == "joint", augment=True)
    eval_loss_fn = asr.loss_fn(train_backbone=settings.mtp_stage == "joint")
    train_iterator, eval_iterator = make_data(config, settings, layout)
    t = config.train
    init_fn = asr.init_fn(config)
    if settings.backbone_from:
        from chorus.rl.init_from import load_policy_params, with_values

        pretrained = load_policy_params(settings.backbone_from, "experiment.backbone_from")
        fresh = init_fn

        def init_fn(rng):
            params = fresh(rng)
            return {**params, "backbone": with_values(params["backbone"], pretrained,
                                                       "experiment.backbone_from")}

    def evaluate(params, workdir: str) -> dict:
        from chorus.atomic import write_json, write_text

        batches = eval_iterator(jax.process_index(), jax.process_count(), t.seed)
        result = evaluate_loss(eval_loss_fn, params, batches)
        result.update(decode_eval(config, settings, asr, params, layout))
        if jax.process_index() == 0:
            write_json(os.path.join(workdir, "eval", "asr_eval.json"), result)
            write_text(os.path.join(workdir, "eval", "asr_eval.md"), report_markdown(result))
        return result

    return Experiment(
        name="asr", init_fn=init_fn, loss_fn=loss_fn, eval_loss_fn=eval_loss_fn,
        train_iterator=train_iterator, eval_iterator=eval_iterator, evaluate=evaluate,
        flops_per_batch=backbone_train_flops(config, t.batch_size, t.seq_len,
                                             t.max_audio_clips, t.max_mel_frames),
        tokens_per_batch=t.batch_size * t.seq_len,
        # Inference reads the tokenizer from the run directory (chorus transcribe).
        assets={"tokenizer.model": os.path.join(os.path.expanduser(settings.data_dir),
                                                "tokenizer.model")},
        # A second-stage heads run trains "mtp" only (the CTC head needs the backbone).
        frozen=tuple(name for name in ("backbone", "ctc") if name == "backbone"
                     or asr.ctc_head is not None) if settings.mtp_stage == "heads" else ())


# ----------------------------------------------------------------------------- transcribe


def transcribe_main(argv: list[str]) -> int:
    """`chorus transcribe --workdir W FILE...`: any format soundfile/librosa reads."""
    parser = argparse.ArgumentParser(prog="chorus transcribe", description=transcribe_main.__doc__)
    parser.add_argument("--workdir", required=True, help="a `chorus train --experiment asr` run")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (latest)")
    parser.add_argument("--greedy", action="store_true", help="plain greedy decoding")
    parser.add_argument("files", nargs="+")
    args = parser.parse_args(argv)

    from chorus.audio.io import load_wave
    from chorus.audio.mel import log_mel
    from chorus.training.restore import asset_path, load_run
    from data_pipelines.tokenizer import TextTokenizer

    run = load_run(args.workdir, step=args.step)  # params only; the run dir is enough
    config = run.config
    settings = AsrSettings.from_config(config.experiment)
    layout = VocabLayout.from_model_config(config.model)
    max_frames = config.train.max_mel_frames
    waves = []
    for path in args.files:
        try:
            wave = load_wave(path, 16_000)
        except Exception as e:  # noqa: BLE001 - any decoder failure is the user's file
            print(f"chorus transcribe: {path}: cannot read audio ({e})", file=sys.stderr)
            return 2
        frames = log_mel(wave)
        if frames.shape[0] > max_frames:
            print(f"chorus transcribe: {path}: {frames.shape[0] / 100:.1f} s of audio; this "
                  f"model takes at most {max_frames / 100:.1f} s (train.max_mel_frames)",
                  file=sys.stderr)
            return 2
        waves.append((path, wave, frames))
    asr = AsrModel.build(config, settings)
    tokenizer = TextTokenizer.from_file(asset_path(run.workdir, "tokenizer.model"))
    transcriber = Transcriber(config, asr, run.params, tokenizer)
    for path, wave, frames in waves:
        example = {"prompt_tokens": asr_prompt(layout, frames.shape[0]),
                   "audio_features": frames, "audio_mask": np.ones(frames.shape[0], bool)}
        request = pad_requests([example], layout, max_frames)
        result, seconds = _timed(lambda r=request: transcriber.decode(
            r, "greedy" if args.greedy else "verified"))
        text = transcriber.texts(result)[0]
        print(json.dumps({"file": path, "text": text, "step": run.step,
                          "audio_seconds": len(wave) / 16_000, "decode_seconds": seconds}))
    return 0

