"""Decoding over the KV cache: greedy, verified multi-token (MTP drafts), sampling rollouts.

See docs/decoding.md. Modules: `verified` (greedy / verified / speculative-sampling loop),
`drafters` (Medusa and DeepSeek-V3 MTP draft proposers), `acceptance` (greedy and speculative
acceptance rules), `generate` (RL rollouts with log-probs), `constraints` (allowed ids,
windowed repetition penalty), `filtering` (temperature, top-k, top-p), `stopping` (per-row
output buffers and stop rules), `inputs` (request checks and defaults, the prompt's forward),
`joint` (a CTC head's prefix scores fused into greedy / verified decoding), `ctc` (CTC greedy,
prefix beam search, forced alignment), `beam` (beam search over the KV cache).
The greedy-vs-verified benchmark is `chorus bench decoding` (experiments/benchmarks/decoding.py).
"""

from chorus.decoding.acceptance import greedy_accept, speculative_accept
from chorus.decoding.constraints import Constraints
from chorus.decoding.drafters import NoDrafter, ParallelDrafter, SequentialDrafter, make_drafter
from chorus.decoding.filtering import filter_logits, sampling_logits, sampling_probs
from chorus.decoding.generate import Rollout, generate
from chorus.decoding.inputs import required_capacity
from chorus.decoding.joint import CtcPrefixScorer, NoScorer, ctc_prefix_scorer
from chorus.decoding.verified import (
    DecodeResult,
    decode_stats,
    decode_with_drafter,
    greedy_decode,
    uncached_tokens,
    verified_decode,
)

__all__ = ["Constraints", "CtcPrefixScorer", "DecodeResult", "NoDrafter", "NoScorer",
           "ParallelDrafter", "Rollout", "SequentialDrafter", "ctc_prefix_scorer",
           "decode_stats", "decode_with_drafter", "filter_logits",
           "generate", "greedy_accept", "greedy_decode", "make_drafter", "required_capacity",
           "sampling_logits", "sampling_probs", "speculative_accept", "uncached_tokens",
           "verified_decode"]
