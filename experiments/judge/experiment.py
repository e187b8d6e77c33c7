"""`chorus train --experiment judge`: the generative reward model's supervised regime.

    data     rows generated in Python from persona cards (experiments/judge/labels.py): row r
             of step s is a pure function of (seed, s, r), so any split over hosts sees the
             same global batch and a resume continues exactly (state: the step)
    model    the shared backbone, its own params {"backbone"}; text only (no audio)
    loss     CE on the rationale + <verdict> + verdict + <eos> tokens (experiments/judge/prompt.py);
             metrics add the verdict's accuracy
    eval     the loss on held-out personas with every perturbation type (held-out ones too);
             `chorus eval`: the accuracy tables (experiments/judge/evaluate.py)
    assets   the tokenizer, so scoring needs the run directory alone
"""

from __future__ import annotations

import os

import jax
import numpy as np

from chorus.config import Config, ConfigError
from chorus.model.factory import backbone_init
from chorus.model.flops import backbone_train_flops
from chorus.model.losses import cross_entropy, token_accuracy
from chorus.model.unified import UnifiedAudioLM
from chorus.training.evaluation import evaluate_loss
from chorus.training.experiment import Experiment, GlobalRowBatches
from chorus.vocab import VocabLayout
from data_pipelines.streams import Stream
from data_pipelines.tokenizer import TextTokenizer, tokenizer_assets
from experiments.judge.labels import (
    make_pair,
    training_example,
)
from experiments.judge.prompt import VERDICTS, example_stream, pair_stream
from experiments.judge.settings import (
    PersonaLabelSettings,
    judge_settings,
    tokenizer_path,
)

TRAIN, EVAL = 0, 1  # the rng stream of each split


def load_tokenizer(settings: PersonaLabelSettings, layout: VocabLayout,
                   workdir: str | None = None) -> TextTokenizer:
    """The corpus tokenizer (experiment.data_dir), or a run's own copy (`workdir`'s asset:
    inference needs the run directory alone); checked to fit the text vocabulary."""
    if workdir is None:
        path = tokenizer_path(settings)
    else:
        from chorus.training.assets import asset_path
        from data_pipelines.tokenizer import TOKENIZER_FILENAME

        path = asset_path(workdir, TOKENIZER_FILENAME)
    tokenizer = TextTokenizer.from_file(path)
    if tokenizer.vocab_size > layout.text_size:
        raise ConfigError(f"model.text_vocab_size: expected >= the tokenizer's "
                          f"{tokenizer.vocab_size} pieces, got {layout.text_size}")
    return tokenizer


def stream_row(stream: Stream, seq_len: int, layout: VocabLayout) -> dict[str, np.ndarray]:
    """One stream as a padded row of the batch contract (+ verdict_mask: the position whose
    target is the verdict token)."""
    n = len(stream.tokens)
    if n > seq_len:
        raise ConfigError(f"train.seq_len: expected >= {n} (the longest judge stream so far), "
                          f"got {seq_len}")
    pad = lambda x, value: np.concatenate(  # noqa: E731
        [x, np.full(seq_len - n, value, x.dtype)])
    verdict_ids = [layout.special(v) for pair in VERDICTS.values() for v in pair]
    verdict = np.isin(stream.targets, verdict_ids) & (stream.loss_mask > 0)
    valid = np.arange(seq_len) < n
    return {"tokens": pad(stream.tokens, layout.pad_id),
            "targets": pad(stream.targets, layout.pad_id),
            "loss_mask": pad(stream.loss_mask, 0.0),
            "verdict_mask": pad(verdict.astype(np.float32), 0.0),
            "segment_ids": valid.astype(np.int32),
            "positions": np.where(valid, np.arange(seq_len), 0).astype(np.int32)}


class PersonaLabelBatches(GlobalRowBatches):
    """Rows generated from persona labels, this host's share of the global batch; row r of
    step s draws from default_rng([seed, split, s, r]) (`row_rng`). Subclasses implement
    `_row`: the judge's streams here, the reward model's pairs."""

    def __init__(self, config: Config, settings: PersonaLabelSettings, tokenizer: TextTokenizer,
                 split: int, shard_index: int = 0, shard_count: int = 1, seed: int = 0):
        t = config.train
        if t.batch_size % shard_count:
            raise ConfigError(f"train.batch_size: expected a multiple of the {shard_count} "
                              f"hosts, got {t.batch_size}")
        self.layout = VocabLayout.from_model_config(config.model)
        self.settings, self.seq_len, self.split, self.seed = settings, t.seq_len, split, seed
        self.encode = tokenizer.encode
        self.lexicon, self.perturbations = settings.split(train=split == TRAIN)
        self.rows = self.shard_rows(t.batch_size, shard_index, shard_count)
        self.step = 0

    def row_rng(self, step: int, row: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.split, step, row])


class JudgeBatches(PersonaLabelBatches):
    """Generated judge rows: pointwise examples and, with pairwise_fraction, pairs."""

    def example(self, step: int, row: int):
        """The example of global row `row` at `step`: pairwise with pairwise_fraction."""
        s = self.settings
        rng = self.row_rng(step, row)
        if rng.random() < s.pairwise_fraction:
            kind = self.perturbations[int(rng.integers(len(self.perturbations)))]
            return make_pair(rng, kind, self.lexicon)
        return training_example(rng, self.perturbations, self.lexicon, s.positive_fraction)

    def _row(self, step: int, row: int) -> dict[str, np.ndarray]:
        ex = self.example(step, row)
        make = pair_stream if hasattr(ex, "better") else example_stream
        return stream_row(make(self.layout, self.encode, ex, self.settings.rationale),
                          self.seq_len, self.layout)



def judge_loss(model: UnifiedAudioLM):
    """CE over the supervised tokens (rationale, <verdict>, verdict, <eos>); the verdict's
    own CE and argmax accuracy as metrics."""

    def loss_fn(params, batch, rng):
        out = model.apply({"params": params["backbone"]}, batch["tokens"], batch["positions"],
                          batch["segment_ids"])
        logits = out["logits"]
        ce, count = cross_entropy(logits, batch["targets"], batch["loss_mask"])
        verdict_ce, verdicts = cross_entropy(logits, batch["targets"], batch["verdict_mask"])
        metrics = {"ce": jax.lax.stop_gradient(ce), "tokens": count, "verdicts": verdicts,
                   "verdict_ce": jax.lax.stop_gradient(verdict_ce),
                   "accuracy": token_accuracy(logits, batch["targets"], batch["loss_mask"]),
                   "verdict_accuracy": token_accuracy(logits, batch["targets"],
                                                      batch["verdict_mask"])}
        return ce, {**jax.tree.map(jax.lax.stop_gradient, metrics), "loss": ce}

    return loss_fn


def build(config: Config) -> Experiment:
    settings = judge_settings(config)
    layout = VocabLayout.from_model_config(config.model)
    model = UnifiedAudioLM(config)
    backbone = backbone_init(model, config)
    t = config.train
    loss_fn = judge_loss(model)

    def iterator(split: int):
        def make(shard_index: int, shard_count: int, seed: int) -> JudgeBatches:
            return JudgeBatches(config, settings, load_tokenizer(settings, layout), split,
                                shard_index, shard_count, seed)

        return make

    def evaluate(params, workdir: str) -> dict:
        from chorus.atomic import write_json, write_text
        from experiments.judge.evaluate import accuracy_tables, report_markdown
        from experiments.judge.scoring import JudgeScorer

        tokenizer = load_tokenizer(settings, layout, workdir)
        batches = JudgeBatches(config, settings, tokenizer, EVAL, jax.process_index(),
                               jax.process_count(), t.seed)
        result = {"loss": evaluate_loss(loss_fn, params, batches, max_batches=t.eval_steps)}
        scorer = JudgeScorer(model, params["backbone"], tokenizer, settings)
        result.update(accuracy_tables(scorer, settings, seed=t.seed))
        if jax.process_index() == 0:
            write_json(os.path.join(workdir, "eval", "judge_eval.json"), result)
            write_text(os.path.join(workdir, "eval", "judge_eval.md"), report_markdown(result))
        return result

    return Experiment(
        name="judge", init_fn=lambda rng: {"backbone": backbone(rng)}, loss_fn=loss_fn,
        train_iterator=iterator(TRAIN), eval_iterator=iterator(EVAL), evaluate=evaluate,
        flops_per_batch=backbone_train_flops(config, t.batch_size, t.seq_len, 0,
                                             t.max_mel_frames),
        tokens_per_batch=t.batch_size * t.seq_len, assets=tokenizer_assets(settings.data_dir))

