"""Explain one input of a trained run: its game, its report, its figures (`chorus analyze
interactions`).

    report = explain_audio("runs/reproduce/asr", "x.wav", "out/", players=10)
    report = explain_text("runs/reproduce/tts", "turn on the light", "out/")

OUT/interactions.json holds the report of chorus.analysis.summary plus what the game was
(the run, the input, the players' spans, the baseline, the transcript or codes scored);
figures: shapley.png, strength.png, and for a text tree.png + tree.txt (the word-interaction
tree, built from the exact value table: texts of up to MAX_EXACT_PLAYERS words).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from chorus.analysis.game import MAX_EXACT_PLAYERS, value_table
from chorus.analysis.players import mel_bands, time_segments
from chorus.analysis.summary import DEFAULT_RATIOS, summarize
from chorus.analysis.word_tree import build_tree, draw_tree, render_tree, tree_metrics
from chorus.atomic import write_json, write_text
from chorus.progress import progress
from experiments.interactions import plots


class ProgressBars:
    """A Game progress callback (done, total) -> one progress display per pass."""

    def __init__(self, desc: str, enabled: bool = True):
        self.desc, self.enabled, self.bar, self.total = desc, enabled, None, None

    def __call__(self, done: int, total: int) -> None:
        if self.bar is None or total != self.total or done < self.bar.n:
            self.close()
            self.bar, self.total = progress(total, self.desc, unit="values",
                                            enabled=self.enabled), total
        self.bar.update(done - self.bar.n)
        if done >= total:
            self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def explain_audio(workdir: str, audio_path: str, out: str, *, players: int = 10,
                  axis: str = "time", baseline: str = "mean", reference: str | None = None,
                  ratios: Sequence[float] = DEFAULT_RATIOS, samples: int = 64,
                  exact_max: int = 12, seed: int = 0, overrides: Sequence[str] = (),
                  show_progress: bool = True) -> dict:
    """The ASR game of one audio file (see the module docstring)."""
    from chorus.audio.io import load_wave
    from chorus.audio.mel import log_mel
    from experiments.asr.transcriber import load_transcriber
    from experiments.interactions.games import audio_game, greedy_transcript

    transcriber, run = load_transcriber(workdir, overrides)
    frames = log_mel(load_wave(audio_path))
    limit = transcriber.max_frames
    if len(frames) > limit:
        raise ValueError(f"{audio_path}: {len(frames)} log-mel frames; this model takes at "
                         f"most {limit} (train.max_mel_frames)")
    size = len(frames) if axis == "time" else frames.shape[1]
    if players > size:
        raise ValueError(f"--players: expected at most {size} ({axis} positions of "
                         f"{audio_path}), got {players}")
    if reference is not None:
        ids = np.asarray(transcriber.tokenizer.encode(reference), np.int32)
        scored = reference
    else:
        ids = greedy_transcript(transcriber, frames)
        scored = transcriber.tokenizer.decode([int(t) for t in ids])
    who = (time_segments(len(frames), players) if axis == "time" else
           mel_bands(frames.shape[1], players))
    game = audio_game(transcriber, frames, ids, who, baseline)
    report = summarize(game, ratios=ratios, exact_max=exact_max, samples=samples, seed=seed,
                       progress=ProgressBars("analyze", show_progress))
    report["game"] = {"run": run.workdir, "step": run.step, "audio": audio_path,
                      "value": "log p(transcript <eos> | clip with S kept)",
                      "transcript": scored, "transcript_source":
                      "reference" if reference is not None else "greedy",
                      "baseline": baseline, "players": who.to_json()}
    os.makedirs(out, exist_ok=True)
    write_json(os.path.join(out, "interactions.json"), report)
    plots.shapley_heatmap(frames, who, report["shapley"]["mean"],
                          os.path.join(out, "shapley.png"), f"Shapley values: {scored!r}")
    _strength_figure(report, os.path.join(out, "strength.png"))
    return report


def explain_text(workdir: str, text: str, out: str, *, baseline: str = "pad",
                 instruction: str = "", speaker: str | None = None,
                 codec_run: str | None = None, ratios: Sequence[float] = DEFAULT_RATIOS,
                 samples: int = 64, exact_max: int = 12, seed: int = 0,
                 overrides: Sequence[str] = (), show_progress: bool = True,
                 tree_criterion: str = "benefit") -> dict:
    """The TTS game of one text: its words are the players (see the module docstring);
    tree_criterion: merge by the largest B([S]) ("benefit") or B(L, R) ("between")."""
    from experiments.interactions.games import text_game
    from experiments.tts.synthesizer import SpeechRequest, Synthesizer

    synth = Synthesizer.load(workdir, codec_run=codec_run, overrides=overrides)
    tg = text_game(synth, SpeechRequest(text, instruction, speaker, seed), mask=baseline)
    game = {"run": workdir, "text": text, "instruction": instruction, "speaker": speaker,
            "value": "log p(the model's codes <tts_end> | prompt with S kept)",
            "codes": int(tg.output.size)}
    return _word_report(tg, game, out, baseline=baseline, ratios=ratios, samples=samples,
                        exact_max=exact_max, seed=seed, show_progress=show_progress,
                        tree_criterion=tree_criterion)


def explain_judge(workdir: str, answer: str, out: str, *, card: str, question: str,
                  baseline: str = "pad", ratios: Sequence[float] = DEFAULT_RATIOS,
                  samples: int = 64, exact_max: int = 12, seed: int = 0,
                  show_progress: bool = True, tree_criterion: str = "benefit") -> dict:
    """The judge's game of one exchange: the answer's words are the players, f(S) the
    verdict's log-odds (see experiments.interactions.games.judge_game)."""
    from experiments.interactions.games import judge_game
    from experiments.judge.rewards import JudgeReward

    if not card.strip() or not question.strip():
        raise ValueError("--card and --question: a judge game needs the persona card and the "
                         "question the answer replies to")
    scorer = JudgeReward.build(None, run=workdir).scorer  # loaded as the RL reward loads it
    tg = judge_game(scorer, card, question, answer, mask=baseline)
    game = {"run": workdir, "text": answer, "card": card, "question": question,
            "value": "log p(<yes>) - log p(<no>) at the verdict | answer with S kept",
            "rationale": scorer.tokenizer.decode(
                [int(t) for t in tg.output if t < scorer.layout.text_size])}
    return _word_report(tg, game, out, baseline=baseline, ratios=ratios, samples=samples,
                        exact_max=exact_max, seed=seed, show_progress=show_progress,
                        tree_criterion=tree_criterion)


def _word_report(tg, game: dict, out: str, *, baseline: str, ratios, samples: int,
                 exact_max: int, seed: int, show_progress: bool, tree_criterion: str) -> dict:
    """Report, word tree and figures of a word game (TTS prompt or judge input)."""
    n = tg.game.num_players
    bars = ProgressBars("analyze", show_progress)
    table = value_table(tg.game, progress=bars) if n <= MAX_EXACT_PLAYERS else None
    report = summarize(tg.game, ratios=ratios, exact_max=exact_max, samples=samples,
                       seed=seed, progress=bars, table=table if n <= exact_max else None)
    report["game"] = {**game, "baseline": baseline, "tree_criterion": tree_criterion,
                      "players": tg.players.to_json()}
    os.makedirs(out, exist_ok=True)
    if table is not None:
        tree = build_tree(table, n, criterion=tree_criterion)
        report["tree"] = {"text": render_tree(tree, tg.words, benefits=True), **tree_metrics(tree)}
        draw_tree(tree, tg.words, os.path.join(out, "tree.png"))
        write_text(os.path.join(out, "tree.txt"), report["tree"]["text"] + "\n")
    else:
        report["tree"] = None  # the tree needs the exact 2^n table
    write_json(os.path.join(out, "interactions.json"), report)
    plots.word_bars(tg.words, report["shapley"]["mean"], os.path.join(out, "shapley.png"))
    _strength_figure(report, os.path.join(out, "strength.png"))
    return report


def _strength_figure(report: dict, path: str) -> str:
    s = report["strength"]
    return plots.strength_curves({"this input": (report["ratios"], s["mean"], s["stderr"])},
                                 path, ylabel="mean |I^(m)(i, j)| over pairs (nats)")
