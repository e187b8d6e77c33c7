"""The `chorus` command. Each subcommand lives in the module that owns its job.

    chorus info      --preset P                 parameter counts, FLOPs/token, bytes per device
    chorus compile   --preset P --topology T    AOT-compile the sharded train step for a TPU pod
    chorus train     --experiment E ...         train (SFT) through the shared trainer
    chorus eval      --experiment E ...         evaluate the latest checkpoint
    chorus transcribe --workdir W FILE...       ASR on audio files
    chorus rl        --experiment E --algo A    RLHF (dpo | grpo | ppo)
    chorus ablate    --experiment E --sweep S   reward-design / algorithm sweeps
    chorus data      synth | stats | tokenizer  the offline corpus
    chorus codec     train | encode | decode | eval
    chorus bench     attention | data | train   benchmarks (JSON + markdown)
"""

from __future__ import annotations

import importlib
import os
import sys

# subcommand -> "module:function"; a function takes argv (list[str]) and returns an exit code.
COMMANDS: dict[str, tuple[str, str]] = {
    "info": ("chorus.commands.info:main", "parameter counts, FLOPs per token, bytes per device"),
    "compile": ("chorus.commands.compile:main", "AOT-compile the sharded train step for TPU"),
    "train": ("chorus.training.cli:train_main", "train an experiment"),
    "eval": ("chorus.training.cli:eval_main", "evaluate the latest checkpoint"),
    "transcribe": ("experiments.asr:transcribe_main", "transcribe audio files"),
    "rl": ("chorus.rl.cli:main", "RLHF: dpo | grpo | ppo"),
    "ablate": ("chorus.rl.ablate:main", "reward-design / algorithm sweeps"),
    "data": ("data_pipelines.cli:main", "offline corpus: synth | stats | tokenizer"),
    "codec": ("chorus.codec.cli:main", "speech tokenizer / detokenizer"),
    "bench": ("experiments.benchmarks.cli:main", "benchmarks: attention | data | train"),
}


def _usage() -> str:
    lines = ["usage: chorus COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<11} {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"chorus: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    # libtpu is installed for AOT compiles; CPU runs should not probe for a TPU runtime.
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    # Several processes may load libtpu for AOT compiles at once (tests, benchmarks).
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    target, _ = COMMANDS[name]
    module_name, func_name = target.split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    return int(func(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
