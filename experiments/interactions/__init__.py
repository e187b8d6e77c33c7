"""Interaction analysis of chorus' models: what the speech model listens to, in the terms of
game theory (Shapley values, multi-order interactions), and what adversarial audio does to it.

    games.py       the games: ASR (time segments / mel bands of a clip), TTS (words of a text)
    explain.py     one input -> report + figures (`chorus analyze interactions`)
    experiment.py  clean vs adversarial x normal vs adversarially trained (`chorus analyze
                   experiment`)
    plots.py       the figures
    cli.py         `chorus analyze`

The estimators are model-agnostic (chorus.analysis); the attacks on the ASR model are
experiments/asr/adversarial.py.
"""

COMMANDS = {"analyze": ("experiments.interactions.cli:main",
                        "Shapley values and multi-order interactions of a model's inputs")}
