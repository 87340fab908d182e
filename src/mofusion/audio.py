"""Music features for dance: audio read offline, checked, and turned into one feature vector per
motion frame (a log-mel spectrogram and its onset strength), cached per song.

- Reading: soundfile (libsndfile: wav, flac, ogg, mp3), channels averaged to mono, resampled
  (scipy's polyphase filter) to ``fps * hop`` samples per second, so that one STFT hop is exactly
  one motion frame.
- Features: ``torch.stft`` (Hann window, ``n_fft`` 2048, centred with zero padding, as librosa),
  power spectrum through a Slaney mel filterbank (librosa's default), ``log(1e-5 + mel)``; onset
  strength as the mean positive rise of the log-mel over one frame (spectral flux). Computed in
  float64 wherever it runs, so CPU and GPU give the same features (to float rounding).
- Checks, each one line naming the file: unreadable or truncated files, NaN or infinite samples,
  silence, shorter than ``MIN_SECONDS`` or longer than ``MAX_SECONDS``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ._io import atomic_path
from .errors import InputError
from .paths import cache_dir, file_digest

if TYPE_CHECKING:
    from .config import MofusionConfig

MIN_SECONDS = 2.0
MAX_SECONDS = 600.0
SILENCE_RMS = 1e-4
"""Below this root-mean-square amplitude (-80 dB full scale) a file counts as silent."""


@dataclass(frozen=True)
class AudioFeatureConfig:
    """How music becomes per-frame features (saved with a music model)."""

    fps: float = 25.0
    """Motion frames per second: one feature vector per frame."""
    base_rate: int = 22050
    """Audio is resampled to about this rate (exactly ``fps * hop``)."""
    n_fft: int = 2048
    n_mels: int = 64
    fmin: float = 0.0
    fmax: float = 8000.0
    onset: bool = True

    @property
    def hop(self) -> int:
        return max(1, round(self.base_rate / self.fps))

    @property
    def sample_rate(self) -> int:
        """The rate audio is resampled to: a whole number of samples per frame."""
        rate = self.fps * self.hop
        if abs(rate - round(rate)) > 1e-6:
            raise InputError("audio", f"fps {self.fps} gives no whole sample rate; use an integer fps")
        return int(round(rate))

    @property
    def dim(self) -> int:
        return self.n_mels + (1 if self.onset else 0)

    @classmethod
    def of(cls, config: MofusionConfig) -> AudioFeatureConfig:
        """The music features a model configuration asks for (at its motion frame rate)."""
        return cls(
            fps=config.data.fps, n_mels=config.condition.music_mels, onset=config.condition.music_onset
        )


def read_audio(path: str | Path, sample_rate: int) -> np.ndarray:
    """Mono float64 samples of ``path`` at ``sample_rate``, checked (see the module docstring)."""
    import soundfile

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such file")
    try:
        with _quiet_stderr():
            info = soundfile.info(str(path))
    except (RuntimeError, soundfile.LibsndfileError, OSError) as exc:
        raise InputError(path, f"cannot read it as audio ({_short(exc, path)})") from None
    if info.duration > MAX_SECONDS * 1.05:  # before decoding a long file
        raise InputError(path, f"is {info.duration / 60:.1f} min long; at most {MAX_SECONDS / 60:.0f} min")
    try:
        with _quiet_stderr():
            samples, rate = soundfile.read(str(path), dtype="float64", always_2d=True)
    except (RuntimeError, soundfile.LibsndfileError, OSError, ValueError) as exc:
        raise InputError(
            path, f"cannot decode the audio, truncated or damaged? ({_short(exc, path)})"
        ) from None
    if samples.size == 0:
        raise InputError(path, "holds no audio samples")
    if not np.isfinite(samples).all():
        raise InputError(path, "contains NaN or infinite samples")
    mono = samples.mean(axis=1)
    seconds = len(mono) / rate
    if seconds < MIN_SECONDS:
        raise InputError(path, f"is {seconds:.1f} s long; at least {MIN_SECONDS:g} s are needed")
    if seconds > MAX_SECONDS:
        raise InputError(path, f"is {seconds / 60:.1f} min long; at most {MAX_SECONDS / 60:.0f} min")
    if float(np.sqrt(np.mean(mono**2))) < SILENCE_RMS:
        raise InputError(path, "is silent (below -80 dB)")
    return resample_audio(mono, int(rate), sample_rate)


def resample_audio(samples: np.ndarray, rate: int, new_rate: int) -> np.ndarray:
    """Mono samples from ``rate`` to ``new_rate`` (scipy's polyphase filter)."""
    if rate == new_rate:
        return samples
    from scipy.signal import resample_poly

    ratio = Fraction(new_rate, rate).limit_denominator(10_000)
    return resample_poly(samples, ratio.numerator, ratio.denominator)


def _short(exc: BaseException, path: Path) -> str:
    text = str(exc).strip().replace(f"'{path}'", "the file")
    if "does not exist or is not a regular file" in text:
        # libsndfile's words for a file that is there but whose contents no decoder recognises
        # (text named .mp3, say): the file was checked to exist before this
        return "its contents are not in an audio format that libsndfile reads: wav, flac, ogg, mp3"
    return text.splitlines()[0] if text else type(exc).__name__


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence what libsndfile's decoders print to the process's stderr (mpg123's "Note: ..."
    lines about a damaged file): the user gets one clear line from us instead."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def mel_filterbank(cfg: AudioFeatureConfig) -> np.ndarray:
    """``(n_mels, n_fft // 2 + 1)`` Slaney-style mel filters (librosa's default), float64."""
    import librosa

    return librosa.filters.mel(
        sr=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.n_mels, fmin=cfg.fmin, fmax=cfg.fmax, dtype=np.float64
    )


def audio_features(
    samples: np.ndarray | torch.Tensor, cfg: AudioFeatureConfig, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """``(frames, dim)`` float32 features of mono samples at ``cfg.sample_rate``: log-mel, then
    onset strength; frame ``k`` is centred on sample ``k * hop``."""
    x = torch.as_tensor(samples, dtype=torch.float64, device=device)
    window = torch.hann_window(cfg.n_fft, periodic=True, dtype=torch.float64, device=device)
    spectrum = torch.stft(x, cfg.n_fft, cfg.hop, window=window, center=True, pad_mode="constant",
                          return_complex=True)  # fmt: skip
    power = spectrum.real**2 + spectrum.imag**2  # (bins, frames)
    mel = torch.as_tensor(mel_filterbank(cfg), device=device) @ power
    log_mel = torch.log(1e-5 + mel).T  # (frames, n_mels)
    parts = [log_mel]
    if cfg.onset:
        rise = torch.clamp(log_mel[1:] - log_mel[:-1], min=0).mean(dim=1)
        parts.append(torch.cat([torch.zeros(1, dtype=rise.dtype, device=device), rise])[:, None])
    return torch.cat(parts, dim=1).float()


def song_stretch(song: np.ndarray, first: int, count: int, path: str | Path, fps: float) -> np.ndarray:
    """``count`` rows of a song's features from row ``first``, for the frames of a dance: a song that
    ends within a second of its dance holds its last frame; one that ends earlier is an error."""
    from .motion import fit_length

    last = first + count - 1
    if last >= len(song) + fps:  # more than a second past the song's end
        raise InputError(path, f"the song ends before the dance ({len(song)} < {last} frames)")
    return fit_length(song[first:] if first < len(song) else song[-1:], count).astype(np.float32)


def song_features(
    path: str | Path, cfg: AudioFeatureConfig, cache: str | Path | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Features ``(frames, dim)`` of a song file and its samples' RMS per frame, cached by the file's
    content and the configuration (training never decodes audio)."""
    path = Path(path)
    try:
        digest = file_digest(path)
    except FileNotFoundError:
        raise InputError(path, "no such file") from None
    except OSError as exc:
        raise InputError(path, f"cannot read it ({exc.strerror or exc})") from None
    key = hashlib.sha256(json.dumps([digest, asdict(cfg), 1]).encode()).hexdigest()[:24]
    target = cache_dir(cache) / "audio" / f"{key}.npz" if cache is not None else None
    if target is not None and target.is_file():
        with np.load(target) as data:
            return data["features"], data["rms"]
    samples = read_audio(path, cfg.sample_rate)
    features = audio_features(samples, cfg).numpy()
    frames = len(features)
    padded = np.pad(samples, (0, max(0, frames * cfg.hop - len(samples))))
    rms = np.sqrt(np.mean(padded[: frames * cfg.hop].reshape(frames, cfg.hop) ** 2, axis=1))
    if target is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as tmp:
            np.savez(tmp, features=features, rms=rms.astype(np.float32))
    return features, rms.astype(np.float32)
