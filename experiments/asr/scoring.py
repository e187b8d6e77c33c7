"""The ASR model's score of a transcript given a clip: log p(text <eos> | <asr> audio).

    score = transcript_scorer(asr.backbone, layout, num_frames, reference_ids)
    logp = score(params["backbone"], features)        # features [B, T, n_mels] -> [B]

One clip length and one transcript per scorer, a batch of feature variants per call: the
value function of interaction analysis (the same clip with players masked) and the objective
of adversarial attacks (differentiable in `features`) are both this function. The stream is
the regime's own (`AsrRegime.stream`), so the score is the teacher-forced loss the model was
trained on, summed over the transcript tokens and <eos>.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from chorus.codec.features import round_up
from chorus.model.unified import UnifiedAudioLM
from chorus.rl.logprobs import sequence_logprobs
from chorus.vocab import MEL_FRAMES_PER_PLACEHOLDER, VocabLayout
from data_pipelines.streams import assemble, ids
from experiments.asr.regime import asr_prompt


@dataclasses.dataclass(frozen=True, eq=False)  # identity hash: jax.jit(scorer) works
class TranscriptScorer:
    """log p(transcript | clip) for feature batches of one clip length (`num_frames`)."""

    backbone: UnifiedAudioLM
    tokens: np.ndarray  # int32 [L]: prompt, transcript, <eos>
    targets: np.ndarray  # int32 [L]
    loss_mask: np.ndarray  # float32 [L]: the transcript tokens and <eos>
    num_frames: int

    def __call__(self, backbone_params, features: jax.Array) -> jax.Array:
        """features [B, T, n_mels] (T = num_frames) -> [B] float32 summed log-probs."""
        if features.ndim != 3 or features.shape[1] != self.num_frames:
            raise ValueError(f"TranscriptScorer features: expected [B, {self.num_frames}, "
                             f"n_mels], got {tuple(features.shape)}")
        b, length = features.shape[0], len(self.tokens)
        tile = lambda x: jnp.broadcast_to(jnp.asarray(x), (b, length))  # noqa: E731
        # The encoder takes whole placeholders of frames; the mask hides the padding.
        padded = round_up(self.num_frames, MEL_FRAMES_PER_PLACEHOLDER)
        features = jnp.pad(features, ((0, 0), (0, padded - self.num_frames), (0, 0)))
        mask = jnp.broadcast_to(jnp.arange(padded) < self.num_frames, (b, 1, padded))
        out = self.backbone.apply(
            {"params": backbone_params}, tile(self.tokens), tile(np.arange(length)),
            tile(np.ones(length, np.int32)), features[:, None], mask)
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
    return TranscriptScorer(backbone, stream.tokens, stream.targets, stream.loss_mask,
                            num_frames)
