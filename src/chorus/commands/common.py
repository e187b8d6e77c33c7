"""Argument handling shared by commands: --preset and repeated --set overrides."""

from __future__ import annotations

import argparse

from chorus.config import PRESETS, Config, load_config


def add_config_args(parser: argparse.ArgumentParser, default_preset: str = "cpu-tiny") -> None:
    parser.add_argument("--preset", default=default_preset, choices=sorted(PRESETS))
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="dotted override, e.g. model.num_layers=4")


def config_from_args(args: argparse.Namespace) -> Config:
    return load_config(args.preset, args.overrides)
