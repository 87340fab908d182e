"""Music features: a tone lands in its mel band at any input rate or channel count, onsets mark
clicks, the features equal librosa's mel spectrogram, and every bad file is one clear error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from mofusion.audio import AudioFeatureConfig, audio_features, mel_filterbank, read_audio, song_features
from mofusion.errors import InputError, MofusionError

CFG = AudioFeatureConfig(fps=25.0)


def _tone(seconds: float, rate: int, freq: float = 440.0, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.3 * np.sin(2 * np.pi * freq * t)
    return np.stack([wave] * channels, axis=1) if channels > 1 else wave


def _mel_bands(freq: float) -> set[int]:
    """The (two overlapping) mel filters whose triangles cover ``freq``."""
    bins = np.fft.rfftfreq(CFG.n_fft, 1 / CFG.sample_rate)
    return set(np.flatnonzero(mel_filterbank(CFG)[:, np.argmin(np.abs(bins - freq))] > 0).tolist())


@pytest.mark.parametrize(
    ("rate", "channels", "suffix"), [(22050, 1, ".wav"), (8000, 2, ".flac"), (96000, 2, ".wav")]
)
def test_a_tone_lands_in_its_band_at_any_rate(tmp_path: Path, rate: int, channels: int, suffix: str) -> None:
    path = tmp_path / f"tone{suffix}"
    soundfile.write(path, _tone(3.0, rate, channels=channels), rate)
    samples = read_audio(path, CFG.sample_rate)
    assert abs(len(samples) - 3.0 * CFG.sample_rate) <= 2
    features = audio_features(samples, CFG).numpy()
    assert features.shape == (3 * 25 + 1, CFG.n_mels + 1)  # one frame per 1/25 s, centred frames
    loudest = set(features[5:-5, : CFG.n_mels].argmax(axis=1).tolist())
    assert len(_mel_bands(440.0)) == 2 and loudest <= _mel_bands(440.0)
    assert not loudest & _mel_bands(2000.0)


def test_features_equal_librosa_melspectrogram() -> None:
    import librosa

    rng = np.random.default_rng(0)
    samples = rng.standard_normal(CFG.sample_rate * 2) * 0.1
    ours = audio_features(samples, CFG).numpy()[:, : CFG.n_mels]
    reference = librosa.feature.melspectrogram(
        y=samples, sr=CFG.sample_rate, n_fft=CFG.n_fft, hop_length=CFG.hop, n_mels=CFG.n_mels,
        fmax=CFG.fmax, pad_mode="constant", power=2.0,
    )  # fmt: skip
    assert np.abs(ours - np.log(1e-5 + reference.T)).max() < 1e-4


def test_onset_strength_marks_clicks() -> None:
    samples = np.zeros(CFG.sample_rate * 4)
    clicks = np.arange(CFG.sample_rate // 4, len(samples), CFG.sample_rate // 2)  # every 0.5 s
    for c in clicks:
        samples[c : c + 200] = np.hanning(200)
    onset = audio_features(samples, CFG).numpy()[:, -1]
    peaks = (
        np.flatnonzero(
            (onset[1:-1] > onset[:-2]) & (onset[1:-1] >= onset[2:]) & (onset[1:-1] > 0.5 * onset.max())
        )
        + 1
    )
    assert len(peaks) == len(clicks)
    assert np.abs(peaks - np.round(clicks / CFG.hop)).max() <= 1  # within a frame


def test_songs_are_cached(tmp_path: Path) -> None:
    path = tmp_path / "song.wav"
    soundfile.write(path, _tone(2.5, 22050), 22050)
    features, rms = song_features(path, CFG, tmp_path / "cache")
    assert list((tmp_path / "cache" / "audio").glob("*.npz"))
    again, _ = song_features(path, CFG, tmp_path / "cache")
    assert np.array_equal(features, again) and len(rms) == len(features) and rms.max() > 0.1


def _write(path: Path, samples: np.ndarray, rate: int = 22050, subtype: str | None = None) -> Path:
    soundfile.write(path, samples, rate, subtype=subtype)
    return path


def test_bad_audio_is_one_clear_error(tmp_path: Path) -> None:
    cases = {
        "silence": (_write(tmp_path / "silence.wav", np.zeros(22050 * 3)), "silent"),
        "short": (_write(tmp_path / "short.wav", _tone(1.0, 22050)), "1.0 s long"),
        "long": (_write(tmp_path / "long.wav", np.zeros(20 * 60 * 2000), 2000, "PCM_16"), "20.0 min long"),
        "nan": (
            _write(
                tmp_path / "nan.wav",
                np.where(np.arange(66150) == 5, np.nan, _tone(3.0, 22050)),
                subtype="FLOAT",
            ),
            "NaN",
        ),  # fmt: skip
        "text": (tmp_path / "notes.mp3", "cannot read it as audio"),
        "missing": (tmp_path / "missing.wav", "no such file"),
    }
    (tmp_path / "notes.mp3").write_text("not a song")
    good = _write(tmp_path / "good.wav", _tone(3.0, 22050), subtype="PCM_16").read_bytes()
    (tmp_path / "truncated.wav").write_bytes(good[:30])  # the header cut short
    cases["truncated"] = (tmp_path / "truncated.wav", "audio")
    for name, (path, words) in cases.items():
        with pytest.raises(InputError) as info:
            read_audio(path, CFG.sample_rate)
        assert str(path) in str(info.value) and words in str(info.value), (name, str(info.value))
        # libsndfile says "does not exist" of a file it cannot decode: not what the user should read
        assert "does not exist" not in str(info.value), (name, str(info.value))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_features_are_the_same_on_gpu() -> None:
    samples = np.random.default_rng(1).standard_normal(CFG.sample_rate * 3) * 0.1
    cpu = audio_features(samples, CFG)
    gpu = audio_features(samples, CFG, "cuda").cpu()
    assert torch.allclose(cpu, gpu, atol=1e-5)


def _streams(path: Path) -> str:
    """What ffmpeg reports of a file's streams (it exits 1 without an output: that is expected)."""
    import subprocess

    import imageio_ffmpeg

    done = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-i", str(path)], capture_output=True, text=True)
    return done.stderr


def test_render_carries_the_music_from_its_start(tmp_path: Path) -> None:
    from mofusion.render import render_video

    song = tmp_path / "song.wav"
    soundfile.write(song, _tone(6.0, 22050), 22050)
    positions = np.zeros((50, 3, 3))  # 2 s at 25 fps: a root, a hip, a head moving up
    positions[:, 1] = [0.2, 0.9, 0.0]
    positions[:, 2, 1] = np.linspace(1.5, 1.8, 50)
    out = render_video(tmp_path / "dance.mp4", [positions], [-1, 0, 0], 25.0, audio=song, audio_start=3.0)
    info = _streams(out)
    assert "Video:" in info and "Audio: aac" in info
    assert "Duration: 00:00:02.0" in info  # as long as the dance, not the song
    assert not list(tmp_path.glob(".*"))  # no temporary left behind
    (tmp_path / "broken.wav").write_text("not audio")
    with pytest.raises(InputError, match="broken.wav: cannot add it as the video's sound"):
        render_video(tmp_path / "x.mp4", [positions], [-1, 0, 0], 25.0, audio=tmp_path / "broken.wav")
    assert not (tmp_path / "x.mp4").exists()
    with pytest.raises(MofusionError, match="only an .mp4"):
        render_video(tmp_path / "x.gif", [positions], [-1, 0, 0], 25.0, audio=song)
