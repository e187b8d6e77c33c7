"""The backbone: decoder over the unified vocabulary + audio encoder/adaptor."""

from chorus.model.factory import abstract_params, example_batch, init_params, param_logical_specs
from chorus.model.unified import KVCache, UnifiedAudioLM, init_cache, splice_audio

__all__ = ["KVCache", "UnifiedAudioLM", "abstract_params", "example_batch", "init_cache",
           "init_params",
           "param_logical_specs", "splice_audio"]
