"""Draft proposers for verified decoding: none, Medusa heads, or DeepSeek-V3 MTP modules.

Interface (all shapes static; k = num_draft):

    state = drafter.init(prompts [B, P], lengths [B], prefill_hidden [B, P, d], capacity)
    state, drafts [B, k], logits [B, k, V] = drafter.propose(state, follow, window_hidden,
                                                              accepted, live, choose)

`propose` sees the previous verify window (positions n..n+k) after acceptance: `accepted` =
a [B], `window_hidden` [B, k+1, d] the backbone's hidden there, and `follow` [B, k+1] the
committed token after each slot (slot s <= a: the token at position n+1+s; slot a holds the
new base token b' at n' = n+a+1). It returns drafts for positions n'+1..n'+k and the logits
`choose` returned for them. `choose(j, logits [B, V], drafted [B, k]) -> (draft [B], logits
[B, V])` picks draft j+1 (j may be traced) given the drafts so far (columns < j of
`drafted`): it applies the decoding constraints (allowed ids, repetition penalty), then takes
the argmax or a sample, and returns the constrained logits the draft came from. Rows with
live = False keep their state. Before the first step the decoders pretend a verify at
n = prompt_len-1 accepted nothing.

Drafters are pytrees (params are leaves, modules and k are static), so they pass through jit.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from chorus.model.heads import ParallelMTP, SequentialMTP, apply_depth, stacked_depth_params
from chorus.model.unified import UnifiedAudioLM


def _static(**kwargs):
    return flax.struct.field(pytree_node=False, **kwargs)


def _at_slot(x, slot):
    """x [B, S, ...], slot [B] -> x[b, slot[b]]."""
    idx = slot.reshape(slot.shape + (1,) * (x.ndim - 1))
    return jnp.take_along_axis(x, idx, axis=1)[:, 0]


def _pad_slots(x, width):
    pad = [(0, 0), (0, width - x.shape[1])] + [(0, 0)] * (x.ndim - 2)
    return jnp.pad(x, pad)


@flax.struct.dataclass
class NoDrafter:
    """k = 0: verified decoding degenerates into plain autoregressive decoding."""

    num_draft: int = flax.struct.field(pytree_node=False, default=0)

    def init(self, prompts, lengths, prefill_hidden, capacity):
        return ()

    def propose(self, state, follow, window_hidden, accepted, live, choose):
        b = follow.shape[0]
        return state, jnp.zeros((b, 0), jnp.int32), None


@flax.struct.dataclass
class ParallelDrafter:
    """Medusa: head j reads the hidden state at the new base's predecessor (slot a)."""

    model: UnifiedAudioLM = _static()
    params: Any
    heads: ParallelMTP = _static()
    head_params: Any
    num_draft: int = _static()

    def init(self, prompts, lengths, prefill_hidden, capacity):
        return ()

    def propose(self, state, follow, window_hidden, accepted, live, choose):
        h = _at_slot(window_hidden, accepted)  # position n'-1: predicts n'+j with head j
        outs = self.heads.apply({"params": self.head_params}, h)[: self.num_draft]
        logits = self.model.apply({"params": self.params}, outs,
                                  method=UnifiedAudioLM.logits)  # [k, B, V]
        drafted = jnp.zeros((h.shape[0], self.num_draft), jnp.int32)
        chosen = []
        for j in range(self.num_draft):
            draft, constrained = choose(j, logits[j], drafted)
            drafted = drafted.at[:, j].set(draft)
            chosen.append(constrained)
        return state, drafted, jnp.stack(chosen, axis=1)


@flax.struct.dataclass
class SequentialDraftState:
    """Per-depth KV caches of the MTP blocks and each depth's last committed output.

    k, v [K, B, T, kv_heads, head_dim]; lengths [K, B]: depth j has cached indices
    0..lengths[j-1]-1, all exact functions of committed tokens. last [K, B, d]: depth j's
    block output at its last cached index (the next depth's first window input).
    """

    k: jax.Array
    v: jax.Array
    lengths: jax.Array
    last: jax.Array


@flax.struct.dataclass
class SequentialDrafter:
    """DeepSeek-V3 MTP modules with their own KV caches, updated with accepted positions.

    Depth j at index i consumes h^{j-1}_i and t_{i+j} and predicts t_{i+j+1}. With the
    committed prefix t_0..t_{n'}, depth j's cache is exact up to index n'-j. One pass per
    step runs depth j over a window of 2k slots starting at its cache length: slots
    0..a extend the exact region by the a+1 committed positions (then kept: length += a+1),
    slots a+1..a+j-1 use the fresh drafts d'_1..d'_{j-1} as tokens and are not kept, and slot
    a+j-1 (index n'-1) yields d'_j. So draft j equals depth j of the teacher-forced MTP chain
    run on [committed prefix, d'_1..d'_{j-1}] - the training computation - and is an exact
    function of the committed prefix. Window tokens are the same for every depth (slot s <->
    t_{n+1+s}); depth j's window inputs are [last output of depth j-1, depth j-1's window
    outputs] shifted by one slot, because depth j's window starts one index earlier. Depths
    run as a lax.scan over the stacked depth parameters (one compiled body for any k).
    """

    model: UnifiedAudioLM = _static()
    params: Any
    heads: SequentialMTP = _static()
    head_params: Any
    num_draft: int = _static()

    @property
    def window(self) -> int:
        return 2 * self.num_draft

    def _stacked(self):
        return jax.tree.map(lambda x: x[: self.num_draft], stacked_depth_params(self.head_params))

    def _embed(self, tokens):
        return self.model.apply({"params": self.params}, tokens,
                                method=UnifiedAudioLM.embed_tokens)

    def init(self, prompts, lengths, prefill_hidden, capacity):
        """Prefills every depth on the prompt (teacher-forced, prompt tokens only)."""
        m = self.model.config.model
        k = self.num_draft
        b, p = prompts.shape
        shape = (b, capacity, m.num_kv_heads, m.head_dim)
        positions = jnp.broadcast_to(jnp.arange(p), (b, p))
        # Depth j's index i embeds t_{i+j}; indices past prompt_len-1-j see padding and are
        # never kept.
        shifted = jnp.stack([jnp.concatenate([prompts[:, j:], jnp.zeros((b, j), prompts.dtype)],
                                             axis=1) for j in range(1, k + 1)])

        def depth(prev, xs):
            params_j, tokens, j = xs
            empty = {"k": jnp.zeros(shape, prefill_hidden.dtype),
                     "v": jnp.zeros(shape, prefill_hidden.dtype)}
            out, _, cache = apply_depth(self.heads, params_j, prev, self._embed(tokens),
                                        positions, None, empty, jnp.zeros_like(lengths), True)
            # The first verify (pretended at n = len-1) extends depth j from index len-j.
            return out, (cache["k"], cache["v"], jnp.maximum(lengths - j, 0),
                         _at_slot(out, jnp.maximum(lengths - 1 - j, 0)))

        _, (ks, vs, lens, lasts) = jax.lax.scan(
            depth, prefill_hidden, (self._stacked(), shifted, jnp.arange(1, k + 1)))
        return SequentialDraftState(ks, vs, lens, lasts)

    def propose(self, state: SequentialDraftState, follow, window_hidden, accepted, live,
                choose):
        k, width = self.num_draft, self.window
        rows = jnp.arange(follow.shape[0])

        def depth(carry, xs):
            inputs, tokens, drafted = carry
            params_j, cache_k, cache_v, start, old_last, j = xs
            positions = start[:, None] + jnp.arange(width)[None, :]
            out, normed, cache = apply_depth(self.heads, params_j, inputs, self._embed(tokens),
                                             positions, None, {"k": cache_k, "v": cache_v},
                                             start, False)
            logits = self.model.apply({"params": self.params},
                                      _at_slot(normed, accepted + j - 1),
                                      method=UnifiedAudioLM.logits)
            draft, logits = choose(j - 1, logits, drafted)
            drafted = drafted.at[:, j - 1].set(draft)
            # d'_j is token t_{n'+j} at slot a+j (depth k's draft is not read back).
            slot = jnp.minimum(accepted + j, width - 1)
            tokens = jnp.where(j < k, tokens.at[rows, slot].set(draft), tokens)
            # Depth j+1's window starts one index earlier: its first input is depth j's
            # output at the last index cached before this step.
            inputs = jnp.concatenate([old_last[:, None], out[:, :-1]], axis=1)
            new = (cache["k"], cache["v"], jnp.where(live, start + accepted + 1, start),
                   jnp.where(live[:, None], _at_slot(out, accepted), old_last))
            return (inputs, tokens, drafted), (new, draft, logits)

        carry = (_pad_slots(window_hidden, width),  # depth 1 reads h^0 at indices n..
                 _pad_slots(follow, width),  # slot s <-> t_{n+1+s}; drafts go in at a+1..
                 jnp.zeros((follow.shape[0], k), jnp.int32))
        xs = (self._stacked(), state.k, state.v, state.lengths, state.last,
              jnp.arange(1, k + 1))
        _, (new, drafts, logits) = jax.lax.scan(depth, carry, xs)
        return (SequentialDraftState(*new), jnp.moveaxis(drafts, 0, 1),
                jnp.moveaxis(logits, 0, 1))


def make_drafter(model: UnifiedAudioLM, params, heads: nn.Module | None, head_params,
                 num_draft: int):
    if heads is None or num_draft == 0:
        return NoDrafter()
    if num_draft > heads.num_heads:
        raise ValueError(f"num_draft_tokens: expected <= the number of MTP heads "
                         f"({heads.num_heads}), got {num_draft}")
    if isinstance(heads, SequentialMTP):
        return SequentialDrafter(model, params, heads, head_params, num_draft)
    if isinstance(heads, ParallelMTP):
        return ParallelDrafter(model, params, heads, head_params, num_draft)
    raise TypeError(f"heads: expected SequentialMTP or ParallelMTP, got {type(heads).__name__}")
