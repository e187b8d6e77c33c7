"""A chunked-causal audio encoder as a stream: push log-mel pieces, get the adaptor frames
that became final (exactly the full encoder's frames; see chorus.model.audio_encoder).

    stream = StreamingEncoder(model, params, batch_size)
    frames, mask = stream.push(mel [N, M, n_mels], mask [N, M])   # M a multiple of 8 (80 ms)
    ...                                                           # -> UnifiedAudioLM.extend
    frames, mask = stream.flush()                                 # end of speech

`push` and `flush` are jitted model methods (`UnifiedAudioLM.stream_audio` / `flush_audio`
over an `EncoderStreamState`); this driver keeps the state and counts frames on the host, so
a stream longer than audio.max_frames fails with a clear error instead of clamping.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from chorus.model.audio_encoder import EncoderStreamState, init_stream_state
from chorus.model.unified import UnifiedAudioLM
from chorus.vocab import ENCODER_STRIDE


@functools.partial(jax.jit, static_argnums=0)
def stream_step(model: UnifiedAudioLM, params, state: EncoderStreamState, mel, mask):
    """(state, adaptor frames [N, F, d], frame mask [N, F]) after pushing mel + mask."""
    return model.apply({"params": params}, state, mel, mask, method=UnifiedAudioLM.stream_audio)


@functools.partial(jax.jit, static_argnums=0)
def stream_flush(model: UnifiedAudioLM, params, state: EncoderStreamState):
    """The open chunk's adaptor frames [N, ceil(C/2), d] + mask at the end of the stream."""
    return model.apply({"params": params}, state, method=UnifiedAudioLM.flush_audio)


class StreamingEncoder:
    """One stream of `batch_size` rows through a model's chunked-causal audio encoder."""

    def __init__(self, model: UnifiedAudioLM, params, batch_size: int):
        self.model, self.params = model, params
        self.config = model.config.audio
        self.state = init_stream_state(self.config, batch_size, model.config.model.dtype)
        self.num_frames = 0  # encoder frames pushed (host copy of state.num_frames)
        self.ended = False

    def push(self, mel, mask=None):
        """Adaptor frames [N, F, d] + mask [N, F] that became final with these log-mel frames
        (mask None: all valid)."""
        if self.ended:
            raise ValueError("audio stream: push after flush (the stream has ended)")
        mel = jnp.asarray(mel)
        mask = jnp.ones(mel.shape[:2], bool) if mask is None else jnp.asarray(mask, bool)
        if mask.shape != mel.shape[:2]:
            raise ValueError(f"audio stream: mask: expected shape {mel.shape[:2]}, got "
                             f"{mask.shape}")
        needed = self.num_frames + mel.shape[1] // ENCODER_STRIDE
        if needed > self.config.max_frames:
            raise ValueError(f"audio stream: {needed} encoder frames exceed "
                             f"audio.max_frames={self.config.max_frames}")
        self.state, frames, frame_mask = stream_step(self.model, self.params, self.state, mel,
                                                     mask)
        self.num_frames = needed
        return frames, frame_mask

    def flush(self):
        """End of the stream: the frames of the last, open chunk."""
        if self.ended:
            raise ValueError("audio stream: flush after flush (the stream has ended)")
        self.ended = True
        return stream_flush(self.model, self.params, self.state)
