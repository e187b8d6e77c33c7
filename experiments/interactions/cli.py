"""`chorus analyze`: Shapley values and multi-order interactions of a model's inputs.

    chorus analyze interactions --workdir runs/reproduce/asr --audio x.wav --out out/ \\
        [--players 10] [--axis time|frequency] [--baseline mean|silence] [--reference "..."]
    chorus analyze interactions --workdir runs/reproduce/tts --text "turn on the light" \\
        --out out/ [--instruction "..."] [--speaker VOICE] [--baseline pad|unk]
    chorus analyze interactions --workdir runs/judge --text "I reside in Porto." \\
        --card "name: Maya. age: 34. home: Riga. ..." --question "Where do you live?" --out out/
    chorus analyze experiment --asr RUN --robust RUN --data CORPUS --out out/ [--tts RUN]

`interactions` explains one input: an audio clip through an ASR run (players = time
segments or mel bands of its log-mel; f(S) = log p(transcript | the clip with S kept), the
transcript being --reference or the model's own greedy one) or a text through a TTS run
(players = its words; f(S) = log p(the codes the model spoke | the prompt with S kept)), or
the answer of an exchange through a judge run (players = its words; f(S) = the verdict's
log-odds log p(<yes>) - log p(<no>) after the judge's own rationale).
It writes OUT/interactions.json (Shapley values, interactions I^(m) at the chosen orders
and their strength, each with its standard error) and figures: shapley.png, strength.png,
and for a text the word-interaction tree (tree.png, tree.txt). Up to --exact-max players
(default 12) everything is exact; beyond, --samples sets the sampling.

`experiment` runs experiments/interactions/experiment.py: clean vs adversarial inputs,
the normal vs the adversarially trained model, on held-out utterances (see its docstring).
Exit codes: 0 done; 2 bad arguments, an unreadable file, or a bad run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from chorus.analysis.summary import DEFAULT_RATIOS


def _ratios(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated ratios m/n in [0, 1], got "
                                         f"{text!r}") from None
    if not values or not all(0.0 <= v <= 1.0 for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated ratios m/n in [0, 1], got "
                                         f"{text!r}")
    return values


def _interactions_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="chorus analyze interactions", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", required=True,
                   help="an ASR run (--audio), a TTS run (--text) or a judge run (--text: the "
                        "answer judged, with --card and --question)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--audio", help="an audio file (any format libsndfile reads)")
    source.add_argument("--text", help="a text to synthesize (inline directions allowed)")
    p.add_argument("--out", required=True, help="output directory (JSON + figures)")
    p.add_argument("--players", type=int, default=10,
                   help="audio: number of segments or bands (default 10); a text's players "
                        "are its words")
    p.add_argument("--axis", choices=("time", "frequency"), default="time",
                   help="audio players: time segments or mel bands")
    p.add_argument("--baseline", default=None,
                   help="masked players take: mean | silence (audio; default mean), "
                        "pad | unk (text; default pad)")
    p.add_argument("--reference", default=None,
                   help="audio: the transcript f(S) scores (default: the model's own)")
    p.add_argument("--instruction", default="", help="text: the TTS instruction")
    p.add_argument("--speaker", default=None, help="text: a catalog voice name")
    p.add_argument("--card", default="", help="judge: the persona card")
    p.add_argument("--question", default="", help="judge: the question the answer replies to")
    p.add_argument("--tree", dest="tree_criterion", choices=("benefit", "between"),
                   default="benefit", help="text: merge the adjacent pair with the largest "
                   "B([L u R]) (benefit, default) or B(L, R) (between)")
    p.add_argument("--codec", default=None, help="text: the codec run (default: the run's)")
    p.add_argument("--orders", type=_ratios, default=DEFAULT_RATIOS,
                   help="orders as ratios m/n, comma-separated (default 0,0.1,...,1)")
    p.add_argument("--samples", type=int, default=64,
                   help="sampled estimators: permutations / contexts per pair and order")
    p.add_argument("--exact-max", type=int, default=12, help="exact up to this many players")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   metavar="KEY=VALUE", help="override of the run's config")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    return p


def interactions_main(argv: list[str]) -> int:
    args = _interactions_parser().parse_args(argv)
    from chorus.config import ConfigError

    def fail(message) -> int:
        print(f"chorus analyze interactions: {message}", file=sys.stderr)
        return 2

    if args.players < 2:
        return fail(f"--players: expected >= 2, got {args.players}")
    if args.samples < 1:
        return fail(f"--samples: expected >= 1, got {args.samples}")
    try:
        from experiments.interactions.explain import explain_audio, explain_text

        if args.audio is not None:
            report = explain_audio(args.workdir, args.audio, args.out, players=args.players,
                                   axis=args.axis, baseline=args.baseline or "mean",
                                   reference=args.reference, ratios=args.orders,
                                   samples=args.samples, exact_max=args.exact_max,
                                   seed=args.seed, overrides=args.overrides,
                                   show_progress=not args.quiet)
        elif _run_module(args.workdir) == "judge":
            from experiments.interactions.explain import explain_judge

            report = explain_judge(args.workdir, args.text, args.out, card=args.card,
                                   question=args.question, baseline=args.baseline or "pad",
                                   ratios=args.orders, samples=args.samples,
                                   exact_max=args.exact_max, seed=args.seed,
                                   show_progress=not args.quiet,
                                   tree_criterion=args.tree_criterion)
        else:
            report = explain_text(args.workdir, args.text, args.out,
                                  baseline=args.baseline or "pad",
                                  instruction=args.instruction, speaker=args.speaker,
                                  codec_run=args.codec, ratios=args.orders,
                                  samples=args.samples, exact_max=args.exact_max,
                                  seed=args.seed, overrides=args.overrides,
                                  show_progress=not args.quiet,
                                  tree_criterion=args.tree_criterion)
    except (ConfigError, FileNotFoundError, ValueError) as e:
        return fail(e)
    print(json.dumps({"out": os.path.abspath(args.out), "method": report["method"],
                      "players": report["players"], "value_full": report["value_full"],
                      "strength": report["strength"]["mean"]}))
    return 0


def _run_module(workdir: str) -> str:
    """The experiment a run directory was trained by (its config's experiment.module)."""
    from chorus.training.restore import resolve_run_dir
    from chorus.training.run_config import read_run_config

    return str(read_run_config(resolve_run_dir(workdir)).experiment.get("module", ""))


def experiment_main(argv: list[str]) -> int:
    from experiments.interactions.experiment import main

    return main(argv)


VERBS = {"interactions": interactions_main, "experiment": experiment_main}


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    verb = VERBS.get(argv[0])
    if verb is None:
        print(f"chorus analyze: unknown verb {argv[0]!r}; expected one of {list(VERBS)}",
              file=sys.stderr)
        return 2
    return verb(argv[1:])
