"""The ASR model's score of a transcript given a clip: log p(text <eos> | <asr> audio).

    score = transcript_scorer(asr.backbone, layout, num_frames, reference_ids)
    logp = score(params["backbone"], features)        # features [B, T, n_mels] -> [B]

One clip and one transcript per scorer, a batch of feature variants per call: the value
function of interaction analysis (the same clip with players masked) and the objective of
adversarial attacks (differentiable in `features`) are both this function. The stream is the
regime's own (`AsrRegime.stream`), so the score is the teacher-forced loss the model was
trained on, summed over the transcript tokens and <eos>.

A scorer is a pytree: its stream and clip length are arrays and only the padded widths are
static (clips padded to a multiple of FRAMES_BUCKET frames under the audio mask, streams to
a multiple of TOKENS_BUCKET tokens outside the loss mask), so one compiled program scores
every clip of a bucket; padding changes no score (the mask hides it from the encoder, and the
causal decoder never looks ahead).
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from chorus.codec.features import round_up
from chorus.model.unified import UnifiedAudioLM
from chorus.rl.logprobs import sequence_logprobs
from chorus.vocab import VocabLayout
from data_pipelines.streams import assemble, ids
from experiments.asr.regime import asr_prompt

FRAMES_BUCKET = 128  # log-mel frames (1.28 s; a multiple of the encoder's 8 per placeholder)
TOKENS_BUCKET = 32


@flax.struct.dataclass
class TranscriptScorer:
    """log p(transcript | clip) for feature batches of one clip ([B, T <= width, n_mels])."""

    tokens: jax.Array  # int32 [L]: prompt, transcript, <eos>, padding
    targets: jax.Array  # int32 [L]
    loss_mask: jax.Array  # float32 [L]: the transcript tokens and <eos>
    frames: jax.Array  # int32 []: the clip's log-mel frames
    backbone: UnifiedAudioLM = flax.struct.field(pytree_node=False)
    width: int = flax.struct.field(pytree_node=False)  # frames the clip is padded to

    @property
    def num_frames(self) -> int:
        """The clip's frame count (outside jit)."""
        return int(self.frames)

    def pad(self, features: jax.Array) -> jax.Array:
        """[B, T, n] -> [B, width, n] (zeros past T; the audio mask hides them)."""
        if features.ndim != 3 or features.shape[1] > self.width:
            raise ValueError(f"TranscriptScorer features: expected [B, T <= {self.width}, "
                             f"n_mels], got {tuple(features.shape)}")
        return jnp.pad(features, ((0, 0), (0, self.width - features.shape[1]), (0, 0)))

    def __call__(self, backbone_params, features: jax.Array) -> jax.Array:
        """features [B, T, n_mels] (the clip's T frames, or padded to `width`) -> [B]
        float32 summed log-probs."""
        features = self.pad(features)
        b, length = features.shape[0], self.tokens.shape[0]
        tile = lambda x: jnp.broadcast_to(jnp.asarray(x), (b, length))  # noqa: E731
        mask = jnp.broadcast_to(jnp.arange(self.width) < self.frames, (b, 1, self.width))
        out = self.backbone.apply(
            {"params": backbone_params}, tile(self.tokens), tile(jnp.arange(length)),
            tile(jnp.ones(length, jnp.int32)), features[:, None], mask)
        logps = sequence_logprobs(out["logits"], tile(self.targets), tile(self.loss_mask))
        return logps.sum(axis=-1)


def transcript_scorer(backbone: UnifiedAudioLM, layout: VocabLayout, num_frames: int,
                      transcript_ids) -> TranscriptScorer:
    """The scorer of `transcript_ids` (text ids, no <eos>) behind a clip of `num_frames`."""
    if num_frames < 1:
        raise ValueError(f"transcript_scorer num_frames: expected >= 1, got {num_frames}")
    text = np.asarray(transcript_ids, np.int32).reshape(-1)
    stream = assemble([(asr_prompt(layout, num_frames), False), (text, True),
                       (ids(layout.eos_id), True)], layout.pad_id)
    pad = round_up(len(stream.tokens), TOKENS_BUCKET) - len(stream.tokens)
    return TranscriptScorer(
        tokens=jnp.asarray(np.pad(stream.tokens, (0, pad), constant_values=layout.pad_id)),
        targets=jnp.asarray(np.pad(stream.targets, (0, pad), constant_values=layout.pad_id)),
        loss_mask=jnp.asarray(np.pad(stream.loss_mask, (0, pad))),
        frames=jnp.asarray(num_frames, jnp.int32), backbone=backbone,
        width=round_up(num_frames, FRAMES_BUCKET))
