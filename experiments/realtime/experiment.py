"""`chorus train --experiment realtime`: the dialogue SFT of the realtime policy.

    data     the corpus' dialogue turns (DialogueRegime through data_pipelines): the card,
             the user's question as audio, the answer as text, then <tts_start>, and with
             experiment.codec_run the spoken answer: its codes (answer_speech.py) and
             <tts_end>; with
             experiment.fresh_cards (default 1) each turn's card is a fresh one of the
             training names and places, its answer re-derived; experiment.out_of_scope of
             the other utterances as out-of-scope requests, declined in character
    model    the shared backbone {"backbone"}; `experiment.backbone_from` starts it from an
             ASR run's (its encoder already hears speech)
    loss     CE on the answer + <tts_start> [+ codes + <tts_end>] (chorus.training.lm_loss)
    evaluate the loss on the eval split, then the persona table (evaluate.py) on
             experiment.eval_splits with corpus cards and with held-out cards, and on their
             out-of-scope requests (held-out cards), and with a codec_run the spoken table
             (spoken.py: held-out turns streamed through the session, the answers' audio
             judged), written to <workdir>/eval/realtime_eval.{json,md}
    assets   the tokenizer, so inference needs the run directory alone

    chorus train --experiment realtime --preset cpu-tiny --workdir runs/realtime \
        --data runs/reproduce/corpus --set experiment.backbone_from=runs/reproduce/asr
"""

from __future__ import annotations

import functools
import os

import jax

from chorus.config import Config, ConfigError
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


def spoken_answers(settings: RealtimeSettings, layout: VocabLayout):
    """The spoken-answer cache of experiment.codec_run (built on first use), or None."""
    if not settings.codec_run:
        return None
    from experiments.realtime.answer_speech import answer_speech

    return answer_speech(settings.codec_run, data_dir(settings), settings.answer_voice,
                         layout.num_audio_codes)


def make_data(config: Config, settings: RealtimeSettings, layout: VocabLayout):
    """(train_iterator, eval_iterator) factories: (shard_index, shard_count, seed) -> iterator.
    The data directory is opened when an iterator is made, not by `build`."""
    from data_pipelines import make_train_iterator

    t = config.train
    # The spoken-answer cache: the codec is loaded and its producer key hashed once, for the
    # train iterator and every eval pass alike.
    answers = functools.cache(lambda: spoken_answers(settings, layout))

    def base() -> dict:
        corpus_tokenizer(config, settings)  # a clear error before any record is read
        return dict(data_dir=data_dir(settings), layout=layout,
                    seq_len=t.seq_len, max_clips=t.max_audio_clips, max_frames=t.max_mel_frames,
                    dataset_name=settings.dataset)

    def train_iterator(shard_index: int, shard_count: int, seed: int):
        regime = DialogueRegime(fresh_cards=settings.fresh_cards,
                                held_out_every=settings.held_out_every,
                                out_of_scope=settings.out_of_scope,
                                answer_codes=answers(), speech_weight=settings.speech_weight)
        return make_train_iterator(regime=regime, split=settings.train_split,
                                   batch_size=t.batch_size // shard_count, seed=seed,
                                   shard_index=shard_index, shard_count=shard_count,
                                   num_workers=settings.data_workers, **base())

    def eval_iterator(shard_index: int, shard_count: int, seed: int):
        # One ordered pass: the same eval batches every time.
        regime = DialogueRegime(answer_codes=answers(), speech_weight=settings.speech_weight)
        return make_train_iterator(regime=regime, split=settings.eval_split,
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
    report, markdown = {"persona": tables}, report_markdown(tables)
    if settings.codec_run:
        report["spoken"] = spoken_eval(config, settings, model, backbone, tokenizer, workdir)
        from experiments.realtime.spoken import spoken_markdown

        markdown += "\n" + spoken_markdown(report["spoken"])
    if jax.process_index() == 0:
        write_json(os.path.join(workdir, "eval", "realtime_eval.json"), report)
        write_text(os.path.join(workdir, "eval", "realtime_eval.md"), markdown)
    return report


def spoken_eval(config: Config, settings: RealtimeSettings, model: UnifiedAudioLM, backbone,
                tokenizer, workdir: str) -> dict:
    """The spoken table (spoken.py) of experiment.spoken_eval_examples held-out turns of
    eval_splits[0], through the session and experiment.codec_run's codec; judged by
    pocketsphinx with the answers' LM (kept in <workdir>/eval) and experiment.asr_run."""
    from chorus.codec.pipeline import Codec
    from experiments.realtime.answer_speech import build_answer_speech
    from experiments.realtime.spoken import answer_judge, spoken_table
    from experiments.realtime.turns import dialogue_examples
    from experiments.tts.judges import ChorusAsrJudge

    examples = dialogue_examples(config, settings, settings.eval_splits[0],
                                 settings.spoken_eval_examples, "held_out")
    # The session and the codec run per utterance on one device with no mesh in context (as
    # `Codec.load` places the codec), not on the checkpoint's training mesh.
    backbone = jax.device_put(backbone, jax.local_devices()[0])
    with jax.set_mesh(None):
        codec = Codec.load(os.path.expanduser(settings.codec_run))
        # the cache of this codec (its encoders' producer key), as training read it
        cache = build_answer_speech(codec, data_dir(settings), settings.answer_voice)
        judges = [answer_judge(os.path.join(workdir, "eval"))]
        if settings.asr_run:
            judges.append(ChorusAsrJudge.load(settings.asr_run))
        return spoken_table(model, backbone, tokenizer, codec, examples, cache, judges,
                            settings.max_answer_tokens, settings.max_answer_codes)


def build(config: Config) -> Experiment:
    settings = realtime_settings(config)
    if settings.codec_run and config.audio.chunk_size <= 0:
        raise ConfigError(f"audio.chunk_size: expected > 0 with experiment.codec_run (the "
                          f"spoken table streams the question through the session's "
                          f"chunked-causal encoder), got {config.audio.chunk_size}")
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
