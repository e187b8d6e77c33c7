"""A run's assets: the files inference needs besides params and config (a tokenizer, ...).

`Experiment.assets` ({name: source file}) are copied into `<workdir>/assets/<name>` when a run
starts, so the run directory alone is enough for inference: the training data may be gone.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping

from chorus.atomic import atomic_path

ASSETS_DIR = "assets"


def asset_path(workdir: str, name: str) -> str:
    """`<workdir>/assets/<name>`; FileNotFoundError naming the run and the asset if missing."""
    path = os.path.join(os.path.abspath(os.path.expanduser(workdir)), ASSETS_DIR, name)
    if not os.path.isfile(path):
        folder = os.path.dirname(path)
        present = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
        raise FileNotFoundError(f"{workdir}: run has no asset {name!r} (expected {path}; "
                                f"assets present: {present}); was it trained before the "
                                "experiment declared it in Experiment.assets?")
    return path


def copy_assets(workdir: str, assets: Mapping[str, str], where: str = "Experiment") -> None:
    """Copies each missing asset atomically (a resume keeps the files the run started with)."""
    for name, source in assets.items():
        target = os.path.join(workdir, ASSETS_DIR, name)
        if os.path.isfile(target):
            continue
        source = os.path.expanduser(source)
        if not os.path.isfile(source):
            raise FileNotFoundError(f"{where}.assets[{name!r}]: expected a file, got "
                                    f"{source!r} (missing)")
        with atomic_path(target) as tmp:
            shutil.copyfile(source, tmp)
