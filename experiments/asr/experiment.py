"""The ASR training experiment (`chorus train --experiment asr`): data, model, loss, eval.

    data     the prepared dataset's packed ASR batches (AsrRegime through data_pipelines)
    model    backbone + MTP heads + CTC head (experiments/asr/model.py)
    loss     training: with SpecAugment; eval loop: without
    evaluate the loss on the eval split, then the decoding table (experiments/asr/evaluate.py)
    assets   the tokenizer, so inference needs the run directory alone
"""

from __future__ import annotations

import os

import jax

from chorus.config import Config, check
from chorus.model.flops import backbone_train_flops
from chorus.training.evaluation import evaluate_loss
from chorus.training.experiment import Experiment
from chorus.training.init_from import backbone_from
from chorus.vocab import VocabLayout
from data_pipelines.tokenizer import TOKENIZER_FILENAME, TextTokenizer, tokenizer_assets
from experiments.asr.model import AsrModel
from experiments.asr.regime import AsrRegime
from experiments.asr.settings import AsrSettings, asr_settings, data_dir


def make_data(config: Config, settings: AsrSettings, layout: VocabLayout):
    """(train_iterator, eval_iterator) factories: (shard_index, shard_count, seed) -> iterator.

    Each host reads its own records and builds batch_size // shard_count rows of the batch.
    The data directory is checked here, when data is first opened (not when configs load).
    """
    from data_pipelines import make_train_iterator
    from data_pipelines.augment import NO_AUGMENT

    t = config.train

    def base() -> dict:
        corpus_tokenizer(config, settings)  # a clear error before any record is read
        return dict(regime=AsrRegime(target=settings.asr_target), data_dir=data_dir(settings),
                    layout=layout, seq_len=t.seq_len, max_clips=t.max_audio_clips,
                    max_frames=t.max_mel_frames, dataset_name=settings.dataset)

    def train_iterator(shard_index: int, shard_count: int, seed: int):
        return make_train_iterator(
            split=settings.train_split, batch_size=t.batch_size // shard_count, seed=seed,
            shard_index=shard_index, shard_count=shard_count,
            num_workers=settings.data_workers, augment_config=settings.augment or NO_AUGMENT,
            **base())

    def eval_iterator(shard_index: int, shard_count: int, seed: int):
        # One ordered pass: the same eval batches every time.
        return make_train_iterator(
            split=settings.eval_split, batch_size=t.batch_size // shard_count, seed=seed,
            shard_index=shard_index, shard_count=shard_count, num_epochs=1, shuffle=False,
            **base())

    return train_iterator, eval_iterator


def corpus_tokenizer(config: Config, settings: AsrSettings) -> TextTokenizer:
    """The dataset's tokenizer (<data_dir>/tokenizer.model), checked to have exactly
    model.text_vocab_size pieces: text ids are its pieces one for one, so a larger tokenizer
    would collide with the special ids and a smaller one leaves ids it decodes as junk."""
    path = os.path.join(data_dir(settings), TOKENIZER_FILENAME)
    tokenizer = TextTokenizer.from_file(path)
    check(tokenizer.vocab_size == config.model.text_vocab_size, "model.text_vocab_size",
          f"the {tokenizer.vocab_size} pieces of {path} (--set model.text_vocab_size="
          f"{tokenizer.vocab_size}, or retrain it: `chorus data tokenizer --vocab-size "
          f"{config.model.text_vocab_size}`)", config.model.text_vocab_size)
    return tokenizer


def build(config: Config) -> Experiment:
    settings = asr_settings(config)
    layout = VocabLayout.from_model_config(config.model)
    asr = AsrModel.build(config, settings)
    joint = settings.mtp_stage == "joint"

    def pieces():  # the character CTC's spellings (read when the loss is first traced)
        tokenizer = corpus_tokenizer(config, settings)
        return tokenizer.pieces(range(tokenizer.vocab_size))

    eval_loss_fn = asr.loss_fn(train_backbone=joint, pieces=pieces)
    train_iterator, eval_iterator = make_data(config, settings, layout)
    t = config.train
    # A heads stage keeps its backbone run's CTC heads too: they are frozen here, and `--mode
    # ctc`, rescoring and word times read the piece one.
    heads_of_backbone = tuple(name for name, head in (("ctc", asr.ctc_head),
                                                       ("ctc_char", asr.char_ctc_head))
                              if head is not None)
    carried = ("backbone",) if joint else ("backbone", *heads_of_backbone)
    init_fn, hooks = backbone_from(asr.init_fn(config), settings.backbone_from, trees=carried)

    def evaluate(params, workdir: str) -> dict:
        from chorus.atomic import write_json, write_text
        from experiments.asr.evaluate import decode_eval, report_markdown
        from experiments.asr.transcriber import Transcriber

        batches = eval_iterator(jax.process_index(), jax.process_count(), t.seed)
        result = evaluate_loss(eval_loss_fn, params, batches)
        tokenizer = corpus_tokenizer(config, settings)
        result.update(decode_eval(config, settings, Transcriber(config, asr, params, tokenizer)))
        if jax.process_index() == 0:
            write_json(os.path.join(workdir, "eval", "asr_eval.json"), result)
            write_text(os.path.join(workdir, "eval", "asr_eval.md"), report_markdown(result))
        return result

    return Experiment(
        name="asr", init_fn=init_fn, loss_fn=asr.loss_fn(train_backbone=joint, augment=True,
                                                      pieces=pieces),
        eval_loss_fn=eval_loss_fn, train_iterator=train_iterator, eval_iterator=eval_iterator,
        evaluate=evaluate, **hooks,
        flops_per_batch=backbone_train_flops(config, t.batch_size, t.seq_len,
                                             t.max_audio_clips, t.max_mel_frames),
        tokens_per_batch=t.batch_size * t.seq_len,
        assets=tokenizer_assets(settings.data_dir),
        # A second-stage heads run trains "mtp" only (the CTC heads need the backbone).
        frozen=() if joint else ("backbone", *heads_of_backbone))
