import io

import numpy as np
from PIL import Image

from services.audio import analysis, render, wav
from tests.unit.services.signals import SAMPLE_RATE_HZ, click_track, sine


def test_render_draws_a_png_of_the_track() -> None:
    audio = wav.Audio(
        samples=(click_track(120, 2.0) + sine(330, 2.0, amplitude=0.2)).astype(np.float32)[:, None],
        sample_rate_hz=SAMPLE_RATE_HZ,
    )
    png = render.render_png(audio, analysis.analyse(audio))
    image = Image.open(io.BytesIO(png))
    assert (image.format, image.size) == ("PNG", (render.WIDTH_PX, render.HEIGHT_PX))
    pixels = np.asarray(image.convert("RGB"), dtype=np.int32)
    drawn = np.any(pixels != np.array(render._BACKGROUND), axis=2)
    assert drawn[render.HEIGHT_PX // 2].mean() > 0.9  # every column has a bar through the middle
    assert drawn[5].mean() < 0.5  # the top is mostly background (only the loudest slices and the beat grid)
