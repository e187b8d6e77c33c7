"""Atomic file writes for the trainer: one mechanism, shared with data_pipelines."""

from data_pipelines.atomic import write_json, write_text

__all__ = ["write_json", "write_text"]
