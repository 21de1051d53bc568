"""Generated recordings that are not auscultation: speech, music, noise, mains hum, clicks, near-silence.

The sound-type classifier needs a "not auscultation" class and the out-of-distribution check needs uploads
that should be flagged, but no such recordings are in the shared data, so they are made here. Every clip is
a pure function of its generator and seed (the rate and length too), written once as 16-bit WAV and read
back through the same audio path as a real recording. Training clips and held-out clips come from disjoint
seed ranges, so the held-out figures are about sounds the classifier never saw.

Speech comes from espeak-ng (Debian package ``espeak-ng``), several voices, speeds and pitches.
"""

from __future__ import annotations

import io
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict

from acula.training.data.records import Recording

DATASET = "generated"
VERSION = 1  # part of the folder name: a change to any generator must not reuse clips written before it
RATES = (8000, 16000, 22050, 44100)
HELD_OUT_SEED = 1_000_000  # held-out clips use seeds from here on; training clips use seeds below it
VOICES = ("en", "en-us", "fr", "de", "es", "it", "pt", "hi", "cmn", "ru")
SENTENCES = (
    "Please take a deep breath and hold it for a moment.",
    "The weather today is mild with a light breeze from the west.",
    "Turn left at the second corner and walk past the bakery.",
    "One two three four five six seven eight nine ten.",
    "The meeting has been moved to Thursday afternoon.",
    "Can you hear me clearly, or should I speak a little louder?",
    "A quick brown fox jumps over the lazy dog near the river.",
    "Remember to bring the documents and your umbrella tomorrow.",
)


class GeneratedMeta(BaseModel):
    """What made a generated clip: enough to make it again."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    generator: str
    seed: int
    rate: int


def _level(x: np.ndarray, rng: np.random.Generator, low: float = 0.02, high: float = 0.3) -> np.ndarray:
    """Scale to a random RMS between ``low`` and ``high`` (log-uniform), clipped to full scale."""
    rms = float(np.sqrt(np.mean(x**2))) or 1.0
    target = float(np.exp(rng.uniform(np.log(low), np.log(high))))
    return np.clip(x * (target / rms), -0.99, 0.99)


def _coloured_noise(n: int, rng: np.random.Generator, exponent: float) -> np.ndarray:
    """Noise whose power falls as 1/f**exponent (0 white, 1 pink, 2 brown), shaped in the frequency domain."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n)
    f[0] = f[1]
    return np.fft.irfft(spectrum / f ** (exponent / 2), n)


def _tone(freq: float, t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A note with a few decaying harmonics (an instrument-like timbre)."""
    harmonics = rng.uniform(0.1, 0.6, size=4)
    out = np.sin(2 * np.pi * freq * t)
    for k, weight in enumerate(harmonics, start=2):
        out += weight**k * np.sin(2 * np.pi * k * freq * t)
    return out


def _music(n: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    """Chords and melody notes from a random key, each with an attack-decay envelope."""
    base = 110.0 * 2 ** (rng.integers(0, 24) / 12)
    scale = np.asarray([0, 2, 4, 5, 7, 9, 11, 12])
    out = np.zeros(n)
    note_len = int(rate * rng.uniform(0.2, 0.8))
    for start in range(0, n, note_len):
        length = min(note_len, n - start)
        t = np.arange(length) / rate
        notes = rng.choice(scale, size=rng.integers(1, 4), replace=False)  # one note or a chord
        envelope = np.minimum(1.0, t / 0.02) * np.exp(-t * rng.uniform(1.0, 6.0))
        for step in notes:
            out[start : start + length] += envelope * _tone(base * 2 ** (step / 12), t, rng)
    return out


def _mains_hum(n: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    mains = 50.0 if rng.random() < 0.5 else 60.0
    t = np.arange(n) / rate
    hum = np.zeros(n)
    for k in range(1, 6):  # the mains frequency and its harmonics, random strengths and phases
        hum += rng.uniform(0.1, 1.0) / k * np.sin(2 * np.pi * mains * k * t + rng.uniform(0, 2 * np.pi))
    return hum + 0.02 * rng.standard_normal(n)


def _clicks(n: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    """Sharp decaying clicks at random times over a faint noise floor (handling noise, connector taps)."""
    out = 0.01 * rng.standard_normal(n)
    decay = np.exp(-np.arange(int(0.01 * rate)) / (0.001 * rate))
    for at in rng.integers(0, n, size=rng.integers(3, 40)):
        piece = rng.choice([-1.0, 1.0]) * decay[: n - at] * rng.uniform(0.2, 1.0)
        out[at : at + len(piece)] += piece
    return out


def _speech(n: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    """espeak-ng reading sentences (random voice, speed, pitch), resampled to ``rate``, fitted to ``n``."""
    import soundfile as sf
    import soxr

    binary = shutil.which("espeak-ng")
    if binary is None:
        raise RuntimeError(
            "espeak-ng not found: generated speech needs the Debian package espeak-ng "
            "(apt-get install espeak-ng; scripts/ci_system_deps.sh installs it)"
        )
    text = " ".join(rng.choice(SENTENCES, size=3, replace=False))
    voice = str(rng.choice(VOICES))
    command = [binary, "-v", voice, "-s", str(rng.integers(120, 220)), "-p", str(rng.integers(20, 80))]
    wav = subprocess.run([*command, "--stdout", text], capture_output=True, check=True, timeout=60).stdout
    samples, native = sf.read(io.BytesIO(wav), dtype="float64")
    speech = soxr.resample(samples, native, rate)
    out = np.zeros(n)
    out[: min(n, len(speech))] = speech[:n]
    return out


GENERATORS: dict[str, Callable[[int, int, np.random.Generator], np.ndarray]] = {
    "speech": _speech,
    "music": _music,
    "white_noise": lambda n, rate, rng: _coloured_noise(n, rng, 0.0),
    "pink_noise": lambda n, rate, rng: _coloured_noise(n, rng, 1.0),
    "brown_noise": lambda n, rate, rng: _coloured_noise(n, rng, 2.0),
    "mains_hum": _mains_hum,
    "clicks": _clicks,
    "near_silence": lambda n, rate, rng: 1e-3 * rng.standard_normal(n),
}


def generate(generator: str, seed: int) -> tuple[np.ndarray, int]:
    """``(samples, rate)`` of one clip; the same ``(generator, seed)`` always gives the same clip."""
    rng = np.random.default_rng([seed, list(GENERATORS).index(generator)])
    rate = int(rng.choice(RATES))
    n = int(rate * rng.uniform(1.5, 12.0))
    x = GENERATORS[generator](n, rate, rng)
    if generator == "near_silence":  # a very low floor: exact digital silence is refused by the decoder
        return np.clip(x * (rng.uniform(3e-4, 2e-3) / 1e-3), -1, 1).astype(np.float32), rate
    return _level(x, rng).astype(np.float32), rate


def generated_records(folder: Path, per_generator: int, held_out: bool) -> list[Recording]:
    """``per_generator`` clips of every generator as records of dataset ``generated`` (WAVs in ``folder``).

    Training clips (split ``train``) use seeds ``0..per_generator-1``; held-out ones (split ``test``) start
    at :data:`HELD_OUT_SEED`. Each clip is its own subject, so grouped splits keep it whole.
    """
    import soundfile as sf

    folder = Path(folder) / f"v{VERSION}"
    folder.mkdir(parents=True, exist_ok=True)
    first = HELD_OUT_SEED if held_out else 0
    records = []
    for name in GENERATORS:
        for seed in range(first, first + per_generator):
            path = folder / f"{name}-{seed}.wav"
            if not path.is_file():
                samples, rate = generate(name, seed)
                tmp = path.with_suffix(".tmp.wav")
                sf.write(tmp, samples, rate, subtype="PCM_16")
                tmp.replace(path)
            info = sf.info(str(path))
            rate = int(info.samplerate)
            records.append(
                Recording(
                    dataset=DATASET,
                    recording_id=f"{name}-{seed}",
                    subject_id=f"{name}-{seed}",
                    audio_path=path.resolve(),
                    native_rate=rate,
                    duration_s=float(info.duration),
                    split="test" if held_out else "train",
                    metadata=GeneratedMeta(generator=name, seed=seed, rate=rate),
                    labels={"generator": name},
                )
            )
    return records
