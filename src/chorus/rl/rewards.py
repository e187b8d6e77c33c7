"""Reward registry and reward mixes.

A reward is a plain callable `reward(prompts, completions, **fields) -> np.ndarray[B]`,
registered by name. Every reward in a mix receives every field, so a reward must accept and
ignore fields it does not use (`**_`). A mix weights rewards by name, optionally z-scoring each
component over the batch or over each group of completions of one prompt first, and reports
every component separately for logging.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from chorus.audio.text import normalize_text
from chorus.eval.text_metrics import utterance_error_rates
from chorus.rl.checks import fail, require, require_one_of

RewardFn = Callable[..., np.ndarray]
NORMALIZATIONS = ("none", "batch", "group")

_REGISTRY: dict[str, RewardFn] = {}


def register_reward(name: str, *, replace: bool = False) -> Callable[[RewardFn], RewardFn]:
    """Decorator: `@register_reward("cer")`. Registering a taken name is an error unless
    `replace=True` (e.g. re-importing a notebook cell)."""
    require(isinstance(name, str) and bool(name), "reward name", "a non-empty string", name)

    def decorate(fn: RewardFn) -> RewardFn:
        if name in _REGISTRY and not replace and _REGISTRY[name] is not fn:
            raise ValueError(f"reward {name!r}: already registered to {_REGISTRY[name]!r}; "
                             "pass replace=True to override")
        _REGISTRY[name] = fn
        return fn

    return decorate


def available_rewards() -> list[str]:
    return sorted(_REGISTRY)


def get_reward(name: str) -> RewardFn:
    if name not in _REGISTRY:
        raise KeyError(f"reward {name!r}: not registered; expected one of {available_rewards()}")
    return _REGISTRY[name]


# ----------------------------------------------------------------------------- mixes


@dataclasses.dataclass(frozen=True)
class RewardTerm:
    name: str
    weight: float
    kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # extra reward args

    def __post_init__(self):
        if self.name not in _REGISTRY:
            fail(f"rewards.{self.name}", f"a registered reward, one of {available_rewards()}",
                 self.name)
        require(isinstance(self.weight, int | float) and np.isfinite(self.weight),
                f"rewards.{self.name}.weight", "a finite number", self.weight)
        object.__setattr__(self, "kwargs", types.MappingProxyType(dict(self.kwargs)))


@dataclasses.dataclass(frozen=True)
class RewardMixConfig:
    """`terms` weighted and summed after per-component `normalization`:
    none | batch (z-score over the batch) | group (z-score within each contiguous group of
    `group_size` completions of one prompt). z-scores use the population std plus `eps`."""

    terms: tuple[RewardTerm, ...]
    normalization: str = "none"
    group_size: int | None = None
    eps: float = 1e-6

    def __post_init__(self):
        require(len(self.terms) > 0, "rewards", "at least one reward", self.terms)
        names = [t.name for t in self.terms]
        require(len(set(names)) == len(names), "rewards", "distinct reward names", names)
        require_one_of("rewards.normalization", self.normalization, NORMALIZATIONS)
        if self.normalization == "group":
            require(isinstance(self.group_size, int) and self.group_size >= 2,
                    "rewards.group_size", "an int >= 2 for group normalization", self.group_size)
        require(self.eps > 0, "rewards.eps", "a positive number", self.eps)

    @classmethod
    def from_mapping(cls, mix: Mapping[str, Any], normalization: str = "none",
                     group_size: int | None = None, eps: float = 1e-6) -> RewardMixConfig:
        """From config data: `{"neg_cer": 1.0, "length_penalty": {"weight": 0.1,
        "max_length": 200}}` — a number is a weight; a mapping is a weight plus reward kwargs."""
        require(isinstance(mix, Mapping), "rewards", "a mapping of reward name -> weight", mix)
        terms = []
        for name, spec in mix.items():
            if isinstance(spec, Mapping):
                if "weight" not in spec:
                    fail(f"rewards.{name}", "a mapping with a 'weight' key", dict(spec))
                kwargs = {k: v for k, v in spec.items() if k != "weight"}
                terms.append(RewardTerm(name, spec["weight"], kwargs))
            else:
                terms.append(RewardTerm(name, spec))
        return cls(tuple(terms), normalization, group_size, eps)


@dataclasses.dataclass(frozen=True)
class RewardBreakdown:
    total: np.ndarray  # [B] weighted sum of the normalized components
    components: dict[str, np.ndarray]  # raw reward per name, [B]
    normalized: dict[str, np.ndarray]  # after normalization, before weighting, [B]

    def metrics(self) -> dict[str, float]:
        """Batch means for logging: reward/total and reward/<name> (raw)."""
        out = {"reward/total": float(np.mean(self.total))}
        out.update({f"reward/{k}": float(np.mean(v)) for k, v in self.components.items()})
        return out


def _zscore(x: np.ndarray, eps: float) -> np.ndarray:
    return (x - x.mean(-1, keepdims=True)) / (x.std(-1, keepdims=True) + eps)


def compute_rewards(mix: RewardMixConfig, prompts: Sequence[Any], completions: Sequence[Any],
                    **fields: Any) -> RewardBreakdown:
    batch = len(completions)
    require(len(prompts) == batch, "prompts", f"{batch} prompts (one per completion)",
            len(prompts))
    if mix.normalization == "group":
        require(batch % mix.group_size == 0, "completions",
                f"a count divisible by rewards.group_size={mix.group_size}", batch)
    components, normalized = {}, {}
    total = np.zeros((batch,), np.float64)
    for term in mix.terms:
        clash = sorted(set(term.kwargs) & set(fields))
        if clash:
            raise ValueError(f"reward {term.name!r}: {clash} given both as mix kwargs and as "
                             "batch fields; expected each name once")
        raw = np.asarray(get_reward(term.name)(prompts, completions, **term.kwargs, **fields),
                         dtype=np.float64)
        if raw.shape != (batch,):
            raise ValueError(f"reward {term.name!r}: expected shape ({batch},), got {raw.shape}")
        if not np.all(np.isfinite(raw)):
            raise ValueError(f"reward {term.name!r}: expected finite values, got {raw}")
        if mix.normalization == "batch":
            norm = _zscore(raw, mix.eps)
        elif mix.normalization == "group":
            norm = _zscore(raw.reshape(-1, mix.group_size), mix.eps).reshape(-1)
        else:
            norm = raw
        components[term.name], normalized[term.name] = raw, norm
        total += term.weight * norm
    return RewardBreakdown(total, components, normalized)


# ----------------------------------------------------------------------------- text rewards

TextNormalizer = Callable[[str], str]


def _texts(reward: str, field: str, values: Sequence[Any] | None, batch: int) -> list[str]:
    if values is None:
        raise ValueError(f"reward {reward!r}: expected a `{field}` field with {batch} texts, "
                         "got none")
    values = list(values)
    if len(values) != batch:
        raise ValueError(f"reward {reward!r}: expected {batch} {field}, got {len(values)}")
    for i, v in enumerate(values):
        if not isinstance(v, str):
            raise ValueError(f"reward {reward!r}: expected text in {field}[{i}], got "
                             f"{type(v).__name__}")
    return values


def _checked(reward: str, completions, references) -> tuple[list[str], list[str]]:
    hyps = _texts(reward, "completions", completions, len(completions))
    return hyps, _texts(reward, "references", references, len(completions))


@register_reward("exact_match")
def exact_match(prompts, completions, *, references=None, normalize: TextNormalizer | None = None,
                **_) -> np.ndarray:
    """1.0 where the normalized completion equals the normalized reference, else 0.0."""
    hyps, refs = _checked("exact_match", completions, references)
    norm = normalize or normalize_text
    return np.array([float(norm(r) == norm(h)) for r, h in zip(refs, hyps, strict=True)])


@register_reward("neg_cer")
def neg_cer(prompts, completions, *, references=None, normalize: TextNormalizer | None = None,
            **_) -> np.ndarray:
    """−CER of each completion against its reference (after normalization)."""
    hyps, refs = _checked("neg_cer", completions, references)
    return -utterance_error_rates(refs, hyps, "cer", normalize)


@register_reward("neg_wer")
def neg_wer(prompts, completions, *, references=None, normalize: TextNormalizer | None = None,
            **_) -> np.ndarray:
    """−WER of each completion against its reference (after normalization)."""
    hyps, refs = _checked("neg_wer", completions, references)
    return -utterance_error_rates(refs, hyps, "wer", normalize)


@register_reward("length_penalty")
def length_penalty(prompts, completions, *, max_length: int | None = None, **_) -> np.ndarray:
    """−max(0, len − max_length) / max_length: 0 up to the budget, then linear in the overshoot.
    len is characters for text, items for token sequences."""
    if not isinstance(max_length, int) or max_length <= 0:
        raise ValueError(f"reward 'length_penalty': expected a positive int max_length "
                         f"(set it in the mix: {{'weight': w, 'max_length': N}}), got "
                         f"{max_length!r}")
    lengths = np.array([len(c) for c in completions], np.float64)
    return -np.maximum(0.0, lengths - max_length) / max_length
