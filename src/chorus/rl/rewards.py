"""Reward registry and reward mixes.

A reward component is registered by name and called with whole completions:

    component(prompts: Prompts, completions: list[Completion], **fields) -> np.ndarray[B]

It is either a plain function, or a class built once from the run config with
`build(config, **kwargs) -> component` (a component that holds models: an ASR transcriber, the
codec, a judge; see chorus.rl.model_rewards). Every component of a mix receives every field
(e.g. `references`), so it must accept and ignore the ones it does not use (`**_`). A mix
weights components by name, optionally z-scoring each over the batch or over each group of
completions of one prompt first, and reports every component separately (reward/<name>).
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from chorus.audio.text import normalize_text
from chorus.config import ConfigError, check
from chorus.eval.text_metrics import utterance_error_rates
from chorus.rl.task import Completion

RewardFn = Callable[..., np.ndarray]
NORMALIZATIONS = ("none", "batch", "group")

_REGISTRY: dict[str, RewardFn | type] = {}


def register_reward(name: str, *, replace: bool = False):
    """Decorator for a reward function or a model-holding reward class (one with a
    `build(config, **kwargs)` classmethod): `@register_reward("neg_cer")`. Registering a taken
    name is an error unless `replace=True` (e.g. re-running a notebook cell)."""
    check(isinstance(name, str) and bool(name), "reward name", "a non-empty string", name)

    def decorate(component):
        if isinstance(component, type) and not callable(getattr(component, "build", None)):
            raise TypeError(f"reward {name!r}: a reward class needs a classmethod "
                            f"build(config, **kwargs); {component.__name__} has none")
        if not callable(component):
            raise TypeError(f"reward {name!r}: expected a function or a class, got "
                            f"{component!r}")
        if name in _REGISTRY and not replace and _REGISTRY[name] is not component:
            raise ValueError(f"reward {name!r}: already registered to {_REGISTRY[name]!r}; "
                             "pass replace=True to override")
        _REGISTRY[name] = component
        return component

    return decorate


def available_rewards() -> list[str]:
    return sorted(_REGISTRY)


def get_reward(name: str) -> RewardFn | type:
    if name not in _REGISTRY:
        raise KeyError(f"reward {name!r}: not registered; expected one of {available_rewards()}")
    return _REGISTRY[name]


# ----------------------------------------------------------------------------- mixes


@dataclasses.dataclass(frozen=True)
class RewardTerm:
    name: str
    weight: float
    kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # component args

    def __post_init__(self):
        check(self.name in _REGISTRY, f"rewards.{self.name}",
              f"a registered reward, one of {available_rewards()}", self.name)
        check(isinstance(self.weight, int | float) and np.isfinite(self.weight),
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
        check(len(self.terms) > 0, "rewards", "at least one reward", self.terms)
        names = [t.name for t in self.terms]
        check(len(set(names)) == len(names), "rewards", "distinct reward names", names)
        check(self.normalization in NORMALIZATIONS, "rewards.normalization",
              f"one of {list(NORMALIZATIONS)}", self.normalization)
        if self.normalization == "group":
            check(isinstance(self.group_size, int) and self.group_size >= 2,
                  "rewards.group_size", "an int >= 2 for group normalization", self.group_size)
        check(self.eps > 0, "rewards.eps", "a positive number", self.eps)

    @classmethod
    def from_mapping(cls, mix: Mapping[str, Any], normalization: str = "none",
                     group_size: int | None = None, eps: float = 1e-6) -> RewardMixConfig:
        """From config data: `{"neg_cer": 1.0, "length_penalty": {"weight": 0.1,
        "max_length": 200}}` — a number is a weight; a mapping is a weight plus the component's
        kwargs (a function gets them at each call, a class at `build`)."""
        check(isinstance(mix, Mapping), "rewards", "a mapping of reward name -> weight", mix)
        terms = []
        for name, spec in mix.items():
            if isinstance(spec, Mapping):
                check("weight" in spec, f"rewards.{name}", "a mapping with a 'weight' key",
                      dict(spec))
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

    def fields(self) -> dict[str, np.ndarray]:
        """Per-row rewards by name: reward/total and reward/<name> (raw), [B] each."""
        return {"reward/total": self.total,
                **{f"reward/{k}": v for k, v in self.components.items()}}

    def metrics(self) -> dict[str, float]:
        """Batch means of `fields` for logging."""
        return {k: float(np.mean(v)) for k, v in self.fields().items()}


def _zscore(x: np.ndarray, eps: float) -> np.ndarray:
    return (x - x.mean(-1, keepdims=True)) / (x.std(-1, keepdims=True) + eps)


class RewardMix:
    """A RewardMixConfig with its components built: functions as they are, reward classes once
    from the run `config` (`build(config, **kwargs)`; kwargs from the mix). Call it with the
    batch's prompts, completions and fields."""

    def __init__(self, mix: RewardMixConfig, config: Any = None):
        self.mix = mix
        self._calls: dict[str, tuple[RewardFn, Mapping[str, Any]]] = {}
        for term in mix.terms:
            component = get_reward(term.name)
            if isinstance(component, type):
                if config is None:
                    raise ConfigError(f"rewards.{term.name}: a reward built from the run "
                                      "config (it holds a model); expected a config, got none")
                self._calls[term.name] = (component.build(config, **term.kwargs), {})
            else:
                self._calls[term.name] = (component, term.kwargs)

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Completion],
                 **fields: Any) -> RewardBreakdown:
        mix, batch = self.mix, len(completions)
        check(len(prompts) == batch, "prompts", f"{batch} prompts (one per completion)",
              len(prompts))
        if mix.normalization == "group":
            check(batch % mix.group_size == 0, "completions",
                  f"a count divisible by rewards.group_size={mix.group_size}", batch)
        components, normalized = {}, {}
        total = np.zeros((batch,), np.float64)
        for term in mix.terms:
            fn, kwargs = self._calls[term.name]
            clash = sorted(set(kwargs) & set(fields))
            if clash:
                raise ValueError(f"reward {term.name!r}: {clash} given both as mix kwargs and "
                                 "as batch fields; expected each name once")
            raw = np.asarray(fn(prompts, completions, **kwargs, **fields), dtype=np.float64)
            if raw.shape != (batch,):
                raise ValueError(f"reward {term.name!r}: expected shape ({batch},), got "
                                 f"{raw.shape}")
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


def batch_references(reward: str, completions: Sequence[Completion],
                     references: Sequence[Any] | None, what: str = "texts") -> list[Any]:
    """The references as a list, checked to be one per completion (and the completions to be
    Completions); `what` names what a reference is, for the error."""
    batch = len(completions)
    for i, c in enumerate(completions):
        if not isinstance(c, Completion):
            raise ValueError(f"reward {reward!r}: expected a Completion in completions[{i}], "
                             f"got {type(c).__name__}")
    if references is None:
        raise ValueError(f"reward {reward!r}: expected a `references` field with {batch} "
                         f"{what}, got none")
    references = list(references)
    if len(references) != batch:
        raise ValueError(f"reward {reward!r}: expected {batch} references, got "
                         f"{len(references)}")
    return references


def _texts(reward: str, completions: Sequence[Completion], references: Sequence[Any] | None
           ) -> tuple[list[str], list[str]]:
    """(completion texts, reference texts), checked one per completion."""
    references = batch_references(reward, completions, references)
    for i, r in enumerate(references):
        if not isinstance(r, str):
            raise ValueError(f"reward {reward!r}: expected text in references[{i}], got "
                             f"{type(r).__name__}")
    return [c.text for c in completions], references


@register_reward("exact_match")
def exact_match(prompts, completions, *, references=None, normalize: TextNormalizer | None = None,
                **_) -> np.ndarray:
    """1.0 where the normalized completion equals the normalized reference, else 0.0."""
    hyps, refs = _texts("exact_match", completions, references)
    norm = normalize or normalize_text
    return np.array([float(norm(r) == norm(h)) for r, h in zip(refs, hyps, strict=True)])


@register_reward("neg_cer")
def neg_cer(prompts, completions, *, references=None, normalize: TextNormalizer | None = None,
            **_) -> np.ndarray:
    """−CER of each completion against its reference (after normalization)."""
    hyps, refs = _texts("neg_cer", completions, references)
    return -utterance_error_rates(refs, hyps, "cer", normalize)


@register_reward("neg_wer")
def neg_wer(prompts, completions, *, references=None, normalize: TextNormalizer | None = None,
            **_) -> np.ndarray:
    """−WER of each completion against its reference (after normalization)."""
    hyps, refs = _texts("neg_wer", completions, references)
    return -utterance_error_rates(refs, hyps, "wer", normalize)


@register_reward("length_penalty")
def length_penalty(prompts, completions, *, max_length: int | None = None, **_) -> np.ndarray:
    """−max(0, len − max_length) / max_length over each completion's token count (its ids, the
    stop token included): 0 up to the budget, then linear in the overshoot."""
    if not isinstance(max_length, int) or max_length <= 0:
        raise ValueError(f"reward 'length_penalty': expected a positive int max_length "
                         f"(set it in the mix: {{'weight': w, 'max_length': N}}), got "
                         f"{max_length!r}")
    lengths = np.array([len(c.ids) for c in completions], np.float64)
    return -np.maximum(0.0, lengths - max_length) / max_length
