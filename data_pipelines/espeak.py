"""eSpeak NG as a Python call: libespeak-ng through ctypes, or the `espeak-ng` binary.

The library comes from the `espeakng-loader` wheel (shared object + voice data inside the
package, no root needed). Only when that library cannot be loaded do we fall back to an
`espeak-ng` executable on PATH.

Determinism: eSpeak keeps oscillator and noise state in C globals that survive between calls
(and even `espeak_Terminate`), so the samples of an utterance depend on the seed *and* on what
this process synthesized before. A fixed sequence of calls in a fresh process is bit-exact;
the corpus builder relies on that by synthesizing every shard in a fresh process.
"""

from __future__ import annotations

import ctypes
import io
import shutil
import subprocess
import threading

import numpy as np

# Constants from espeak-ng's speak_lib.h.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PARAM_RATE, _PARAM_VOLUME, _PARAM_PITCH = 1, 2, 3
_EE_OK = 0

RATE_RANGE = (80, 450)  # words per minute
PITCH_RANGE = (0, 99)  # eSpeak's base-pitch scale, 50 = the voice's normal pitch
VOLUME_RANGE = (0, 200)  # amplitude, 100 = normal

_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                             ctypes.c_void_p)


def check_controls(rate: int, pitch: int, volume: int) -> None:
    for name, value, (lo, hi) in (("rate", rate, RATE_RANGE), ("pitch", pitch, PITCH_RANGE),
                                  ("volume", volume, VOLUME_RANGE)):
        if not (isinstance(value, int | np.integer) and lo <= value <= hi):
            raise ValueError(f"synthesis {name}: expected an int in [{lo}, {hi}], got {value!r}")


class LibraryEngine:
    """libespeak-ng loaded in this process, synthesizing synchronously into a Python list."""

    def __init__(self, library_path: str, data_path: str):
        self.lib = lib = ctypes.CDLL(library_path)
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p,
                                          ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint,
                                     ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
                                     ctypes.c_void_p, ctypes.c_void_p]
        self._has_seed = hasattr(lib, "espeak_ng_SetRandSeed")
        if self._has_seed:
            lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path.encode(), 0)
        if rate <= 0:
            raise RuntimeError(f"espeak_Initialize failed for data path {data_path!r}")
        self.sample_rate = int(rate)
        self._chunks: list[np.ndarray] = []
        self._callback = _CALLBACK(self._on_audio)  # referenced so ctypes keeps it alive
        lib.espeak_SetSynthCallback(self._callback)
        self._lock = threading.Lock()  # eSpeak is one global state machine

    def _on_audio(self, wav, num_samples, events) -> int:
        if num_samples > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
        return 0  # 0 = continue

    def synthesize(self, text: str, voice: str, rate: int, pitch: int, volume: int,
                   seed: int) -> np.ndarray:
        with self._lock:
            if self.lib.espeak_SetVoiceByName(voice.encode()) != _EE_OK:
                raise ValueError(f"synthesis voice: eSpeak NG does not know {voice!r}")
            for param, value in ((_PARAM_RATE, rate), (_PARAM_PITCH, pitch),
                                 (_PARAM_VOLUME, volume)):
                self.lib.espeak_SetParameter(param, int(value), 0)
            if self._has_seed:
                self.lib.espeak_ng_SetRandSeed(int(seed))
            self._chunks = []
            data = text.encode("utf-8") + b"\0"
            err = self.lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8,
                                        None, None)
            self.lib.espeak_Synchronize()
            if err != _EE_OK:
                raise RuntimeError(f"espeak_Synth failed with status {err} for {text!r}")
            chunks, self._chunks = self._chunks, []
        return np.concatenate(chunks) if chunks else np.zeros(0, np.int16)


class BinaryEngine:
    """The `espeak-ng` executable, one process per utterance (so each call is deterministic)."""

    def __init__(self, executable: str):
        self.executable = executable
        self.sample_rate = None  # read from each WAV header

    def synthesize(self, text: str, voice: str, rate: int, pitch: int, volume: int,
                   seed: int) -> np.ndarray:
        import soundfile

        cmd = [self.executable, "-v", voice, "-s", str(rate), "-p", str(pitch), "-a",
               str(volume), "--stdout", text]
        proc = subprocess.run(cmd, capture_output=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"{self.executable} exited with {proc.returncode}: "
                               f"{proc.stderr.decode(errors='replace')[:200]}")
        wave, self.sample_rate = soundfile.read(io.BytesIO(proc.stdout), dtype="int16")
        return wave


_ENGINE = None
_ENGINE_LOCK = threading.Lock()


def load_engine(library_path: str | None = None, data_path: str | None = None):
    """The library engine if libespeak-ng loads, else the binary engine, else an error."""
    try:
        if library_path is None or data_path is None:
            import espeakng_loader

            library_path = library_path or espeakng_loader.get_library_path()
            data_path = data_path or espeakng_loader.get_data_path()
        return LibraryEngine(library_path, data_path)
    except (ImportError, OSError, RuntimeError) as e:
        executable = shutil.which("espeak-ng")
        if executable is None:
            raise RuntimeError(f"eSpeak NG unavailable: libespeak-ng failed to load ({e}) and "
                               "no `espeak-ng` binary is on PATH; install the "
                               "`espeakng-loader` package") from e
        return BinaryEngine(executable)


def get_engine():
    """The process-wide engine, created on first use (after any fork)."""
    global _ENGINE
    with _ENGINE_LOCK:
        if _ENGINE is None:
            _ENGINE = load_engine()
        return _ENGINE
