"""The `chorus` command: one table of core commands, plus the commands each mode contributes.

    chorus info      --preset P                 platform, devices, parameter counts, FLOPs/token
    chorus compile   --preset P --topology T    AOT-compile the sharded train step for a TPU pod
    chorus train     --experiment E ...         train an experiment (all its stages)
    chorus eval      --experiment E ...         evaluate the latest checkpoint
    chorus rl        --experiment E --algo A    RLHF (dpo | grpo | ppo)
    chorus ablate    --experiment E --sweep S   reward-design / algorithm sweeps
    chorus data      synth | stats | tokenizer  the offline corpus
    chorus bench     NAME (attention, decoding, ...)  benchmarks (JSON + markdown)
    ...              the verbs of the modes (`chorus --help` lists them)

A mode contributes verbs with a module-level literal in its experiment module (a file
`experiments/<name>.py` or package `experiments/<name>/__init__.py`):

    COMMANDS = {"transcribe": ("experiments.asr.cli:main", "transcribe audio files")}

The table is read from the source without importing the module (so `chorus --help` stays
fast), and only for help, an unknown verb or a mode's verb: a core command never reads it,
so a broken mode (a malformed table, a syntax error) cannot break the core commands. The
target is imported only when its verb runs. A target `module:function` takes argv
(list[str]) and returns an exit code.

The platform is the user's: nothing here chooses one. JAX runs on what it finds (set
JAX_PLATFORMS=cpu on a CPU host that has libtpu installed to skip its TPU probe; the Makefile
and the tests do).
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import os
import sys

# subcommand -> ("module:function", help)
CORE_COMMANDS: dict[str, tuple[str, str]] = {
    "info": ("chorus.commands.info:main", "platform, devices, parameter counts, FLOPs"),
    "compile": ("chorus.commands.compile:main", "AOT-compile the sharded train step for TPU"),
    "train": ("chorus.training.cli:train_main", "train an experiment (all its stages)"),
    "eval": ("chorus.training.cli:eval_main", "evaluate the latest checkpoint"),
    "rl": ("chorus.rl.cli:main", "RLHF: dpo | grpo | ppo"),
    "ablate": ("chorus.rl.ablate:main", "reward-design / algorithm sweeps"),
    "data": ("data_pipelines.cli:main", "offline corpus: synth | stats | tokenizer"),
    "bench": ("experiments.benchmarks.cli:main", "benchmarks (JSON + markdown)"),
}
MODES_PACKAGE = "experiments"


class CommandTableError(RuntimeError):
    """A mode's COMMANDS literal is malformed or clashes with another command, or its module
    does not parse."""


def _experiment_sources(package: str) -> list[tuple[str, str]]:
    """(module name, source path) of each experiment module, found without importing any."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return []
    found = []
    for folder in spec.submodule_search_locations:
        for entry in sorted(os.listdir(folder)):
            path = os.path.join(folder, entry)
            if entry.endswith(".py") and entry != "__init__.py":
                found.append((f"{package}.{entry[:-3]}", path))
            elif os.path.isfile(os.path.join(path, "__init__.py")):
                found.append((f"{package}.{entry}", os.path.join(path, "__init__.py")))
    return found


def _declared_commands(path: str) -> dict | None:
    """The literal value of a top-level `COMMANDS = {...}` in `path`, or None."""
    with open(path, encoding="utf-8") as f:
        source = f.read()
    try:
        tree = ast.parse(source, filename=path)
    except SyntaxError as e:
        raise CommandTableError(f"{path}: line {e.lineno}: cannot read COMMANDS, the module "
                                f"does not parse: {e.msg}") from None
    for node in tree.body:
        targets = (node.targets if isinstance(node, ast.Assign) else
                   [node.target] if isinstance(node, ast.AnnAssign) and node.value else [])
        if any(isinstance(t, ast.Name) and t.id == "COMMANDS" for t in targets):
            try:
                return ast.literal_eval(node.value)
            except ValueError:
                raise CommandTableError(f"{path}: COMMANDS: expected a literal dict of "
                                        "name -> ('module:function', help)") from None
    return None


def mode_commands(package: str | None = None) -> dict[str, tuple[str, str]]:
    """Verb -> ("module:function", help) contributed by the experiment modules of `package`
    (default MODES_PACKAGE)."""
    table: dict[str, tuple[str, str]] = {}
    owner: dict[str, str] = {}
    for module, path in _experiment_sources(package or MODES_PACKAGE):
        declared = _declared_commands(path)
        if declared is None:
            continue
        if not isinstance(declared, dict):
            raise CommandTableError(f"{path}: COMMANDS: expected a dict, got "
                                    f"{type(declared).__name__}")
        for name, value in declared.items():
            ok = (isinstance(name, str) and isinstance(value, tuple) and len(value) == 2
                  and all(isinstance(v, str) for v in value) and value[0].count(":") == 1)
            if not ok:
                raise CommandTableError(f"{path}: COMMANDS[{name!r}]: expected "
                                        f"('module:function', help), got {value!r}")
            clash = "the core commands" if name in CORE_COMMANDS else owner.get(name)
            if clash:
                raise CommandTableError(f"{path}: command {name!r} is already defined by "
                                        f"{clash}")
            table[name], owner[name] = value, module
    return table


def all_commands() -> dict[str, tuple[str, str]]:
    return {**CORE_COMMANDS, **mode_commands()}


def _usage(commands: dict[str, tuple[str, str]]) -> str:
    lines = ["usage: chorus COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<11} {help_}" for name, (_, help_) in commands.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    name, rest = (argv[0], argv[1:]) if argv else (None, [])
    if name in CORE_COMMANDS:  # the modes' tables are not read: none can break a core verb
        commands = CORE_COMMANDS
    else:
        try:
            commands = all_commands()
        except CommandTableError as e:
            print(f"chorus: {e}", file=sys.stderr)
            return 2
    if name is None or name in ("-h", "--help", "help"):
        print(_usage(commands))
        return 0
    if name not in commands:
        print(f"chorus: unknown command {name!r}\n\n{_usage(commands)}", file=sys.stderr)
        return 2
    module_name, func_name = commands[name][0].split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    return int(func(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
