"""The one audio and text layer, shared by data, models, codec, rewards and evaluation.

    io            load_wave / check_wave / write_wav, AudioError, the int16 convention
    resample      soxr HQ resampling to 16 kHz
    mel           the 128-bin log-mel feature definition (NumPy, for data pipelines)
    mel_jax       the same log-mel in JAX, and STFT / iSTFT (vocoder)
    spec_augment  SpecAugment of log-mel features (JAX)
    vad           VoiceActivityDetector: WebRTC VAD + a spectral-flatness gate, per frame
    speech_gate   SpeechGate / has_speech: does a whole clip hold speech (ASR's no-speech gate)
    text          normalize_text: the one normalization WER / CER are computed on
WER / CER themselves are in `chorus.eval.text_metrics`.
"""
