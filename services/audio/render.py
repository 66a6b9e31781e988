"""A PNG visualization of a track: loudness bars coloured by brightness, with the beat grid."""

from __future__ import annotations

import colorsys
import io

import numpy as np
from PIL import Image, ImageDraw

from services.audio import spectrum
from services.audio.analysis import Analysis
from services.audio.wav import Audio

WIDTH_PX = 960
HEIGHT_PX = 360
_BACKGROUND = (12, 12, 20)
_BEAT_COLOUR = (70, 70, 95)
_MAX_CENTROID_HZ = 5000.0


def render_png(audio: Audio, analysis: Analysis) -> bytes:
    """One column per time slice: bar height is the slice's RMS, hue its spectral centroid."""
    mono = audio.mono().astype(np.float64)
    frequencies_hz, stft = spectrum.stft(mono, audio.sample_rate_hz)
    magnitude = np.abs(stft)
    columns = min(WIDTH_PX, magnitude.shape[1])
    edges = np.linspace(0, magnitude.shape[1], columns + 1).astype(int)
    slices = [magnitude[:, a:b] for a, b in zip(edges[:-1], edges[1:], strict=True)]
    energy = np.array([np.sqrt(np.mean(np.square(s))) for s in slices])
    weights = np.array([s.sum() for s in slices])
    centroids_hz = np.array([(s.sum(axis=1) * frequencies_hz).sum() for s in slices]) / np.maximum(weights, 1e-12)
    levels = energy / energy.max() if energy.max() > 0 else energy

    image = Image.new("RGB", (WIDTH_PX, HEIGHT_PX), _BACKGROUND)
    draw = ImageDraw.Draw(image)
    if analysis.tempo_bpm:
        beat_s = 60.0 / analysis.tempo_bpm
        for beat in np.arange(0.0, analysis.duration_s, beat_s):
            x = int(beat / analysis.duration_s * WIDTH_PX)
            draw.line([(x, 0), (x, HEIGHT_PX)], fill=_BEAT_COLOUR)
    column_px = WIDTH_PX / columns
    middle_px = HEIGHT_PX / 2
    for index, (level, centroid_hz) in enumerate(zip(levels, centroids_hz, strict=True)):
        hue = 0.7 * (1.0 - min(centroid_hz / _MAX_CENTROID_HZ, 1.0))  # dark = blue, bright = red
        red, green, blue = colorsys.hsv_to_rgb(hue, 0.85, 0.35 + 0.65 * level)
        half_px = max(1.0, level * (middle_px - 8))
        left_px = index * column_px
        draw.rectangle(
            [left_px, middle_px - half_px, left_px + max(column_px - 1, 1), middle_px + half_px],
            fill=(int(red * 255), int(green * 255), int(blue * 255)),
        )
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=False)
    return out.getvalue()
