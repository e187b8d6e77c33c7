"""`chorus train --experiment realtime`: the dialogue SFT of the realtime policy (text side).

    data     the corpus' dialogue turns (DialogueRegime through data_pipelines): the card,
             the user's question as audio, the answer as text, then <tts_start>; with
             experiment.fresh_cards (default 1) each turn's card is a fresh one of the
             training names and places, its answer re-derived; experiment.out_of_scope of
             the other utterances as out-of-scope requests, declined in character
    model    the shared backbone {"backbone"}; `experiment.backbone_from` starts it from an
             ASR run's (its encoder already hears speech)
    loss     CE on the answer + <tts_start> (chorus.training.lm_loss)
    evaluate the loss on the eval split, then the persona table (evaluate.py) on
             experiment.eval_splits with corpus cards and with held-out cards, and on their
             out-of-scope requests (held-out cards), written to
             <workdir>/eval/realtime_eval.{json,md}
    assets   the tokenizer, so inference needs the run directory alone

    chorus train --experiment realtime --preset cpu-tiny --workdir runs/realtime \
        --data runs/reproduce/corpus --set experiment.backbone_from=runs/reproduce/asr
"""

from __future__ import annotations

import os

import jax

from chorus.config import Config
from chorus.model.factory import backbone_init
from chorus.model.flops import backbone_train_flops
from chorus.model.unified import UnifiedAudioLM
from chorus.training.evaluation import evaluate_loss
from chorus.training.experiment import Experiment
from chorus.training.init_from import backbone_from
from chorus.training.lm_loss import backbone_lm_loss
from chorus.vocab import VocabLayout
from data_pipelines.tokenizer import tokenizer_assets
from experiments.asr.experiment import corpus_tokenizer
from experiments.asr.settings import data_dir
from experiments.realtime.regime import DialogueRegime
from experiments.realtime.settings import RealtimeSettings, realtime_settings


def make_data(config: Config, settings: RealtimeSettings, layout: VocabLayout):
    """(train_iterator, eval_iterator) factories: (shard_index, shard_count, seed) -> iterator.
    The data directory is opened when an iterator is made, not by `build`."""
    from data_pipelines import make_train_iterator

    t = config.train

    def base() -> dict:
        corpus_tokenizer(config, settings)  # a clear error before any record is read
        return dict(data_dir=data_dir(settings), layout=layout,
                    seq_len=t.seq_len, max_clips=t.max_audio_clips, max_frames=t.max_mel_frames,
                    dataset_name=settings.dataset)

    def train_iterator(shard_index: int, shard_count: int, seed: int):
        regime = DialogueRegime(fresh_cards=settings.fresh_cards,
                                held_out_every=settings.held_out_every,
                                out_of_scope=settings.out_of_scope)
        return make_train_iterator(regime=regime, split=settings.train_split,
                                   batch_size=t.batch_size // shard_count, seed=seed,
                                   shard_index=shard_index, shard_count=shard_count,
                                   num_workers=settings.data_workers, **base())

    def eval_iterator(shard_index: int, shard_count: int, seed: int):
        # One ordered pass: the same eval batches every time.
        return make_train_iterator(regime=DialogueRegime(), split=settings.eval_split,
                                   batch_size=t.batch_size // shard_count, seed=seed,
                                   shard_index=shard_index, shard_count=shard_count,
                                   num_epochs=1, shuffle=False, **base())

    return train_iterator, eval_iterator


def persona_eval(config: Config, settings: RealtimeSettings, model: UnifiedAudioLM, backbone,
                 workdir: str) -> dict:
    """{"persona": {split: persona_table}} of a backbone's greedy answers; written to
    <workdir>/eval/realtime_eval.{json,md} (the SFT run and an RL run of it alike)."""
    from chorus.atomic import write_json, write_text
    from experiments.realtime.evaluate import Responder, persona_table, report_markdown
    from experiments.realtime.turns import dialogue_examples

    layout = VocabLayout.from_model_config(config.model)
    tokenizer = corpus_tokenizer(config, settings)  # the turns are the corpus' anyway
    responder = Responder(model, backbone, tokenizer, layout, config.train.max_mel_frames,
                          settings.max_answer_tokens)
    tables = {}
    for split in settings.eval_splits:
        for cards, name in (("corpus", split), ("held_out", f"{split}, held-out cards")):
            examples = dialogue_examples(config, settings, split, settings.eval_examples, cards)
            tables[name] = persona_table(responder.answers(examples), examples)
        examples = dialogue_examples(config, settings, split, settings.eval_examples,
                                     "held_out", out_of_scope=True)
        tables[f"{split}, out of scope"] = persona_table(responder.answers(examples), examples)
    if jax.process_index() == 0:
        write_json(os.path.join(workdir, "eval", "realtime_eval.json"), {"persona": tables})
        write_text(os.path.join(workdir, "eval", "realtime_eval.md"), report_markdown(tables))
    return {"persona": tables}


def build(config: Config) -> Experiment:
    settings = realtime_settings(config)
    layout = VocabLayout.from_model_config(config.model)
    model = UnifiedAudioLM(config)
    backbone = backbone_init(model, config)
    train_iterator, eval_iterator = make_data(config, settings, layout)
    loss_fn = backbone_lm_loss(model)
    t = config.train
    init_fn, hooks = backbone_from(lambda rng: {"backbone": backbone(rng)}, settings.backbone_from)

    def evaluate(params, workdir: str) -> dict:
        batches = eval_iterator(jax.process_index(), jax.process_count(), t.seed)
        result = evaluate_loss(loss_fn, params, batches)
        result.update(persona_eval(config, settings, model, params["backbone"], workdir))
        return result

    return Experiment(
        name="realtime", init_fn=init_fn, loss_fn=loss_fn, train_iterator=train_iterator,
        eval_iterator=eval_iterator, evaluate=evaluate, **hooks,
        flops_per_batch=backbone_train_flops(config, t.batch_size, t.seq_len,
                                             t.max_audio_clips, t.max_mel_frames),
        tokens_per_batch=t.batch_size * t.seq_len, assets=tokenizer_assets(settings.data_dir))
