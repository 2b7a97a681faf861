"""read_sample_frames: the right source frames (read back from markers drawn into each frame), upright,
covered + centre-cropped to the bucket."""
import numpy as np
import pytest

from hvtui.core.dataset.read import SampleReadError, decode_frames, fit_frame, read_sample_frames
from hvtui.core.dataset.scan import scan_preset
from hvtui.core.dataset.synth import read_marker
from tests.helpers.dataset_builders import clip, preset_for


@pytest.fixture(scope="module")
def marked(tmp_path_factory):
    root = tmp_path_factory.mktemp("read")
    clip(root, "m30.mp4", w=112, h=64, fps=30, frames=25, marker=True)       # 112x64 is its own bucket at 64
    clip(root, "phone.mp4", w=96, h=64, fps=12, frames=9, rotation=90, marker=True)
    return root


def test_resampled_frames_are_the_planned_source_frames(marked):
    r = scan_preset(preset_for(marked, num_frames=9, frame_rate=12))
    s = r.bucket("112x64@9").samples[0]
    assert s.frame_indices == [0, 2, 5, 7, 10, 12, 15, 17, 20]
    frames = read_sample_frames(s)
    assert frames.shape == (9, 64, 112, 3) and frames.dtype == np.uint8
    assert [read_marker(f) for f in frames] == s.frame_indices


def test_repeated_indices(marked):
    idx = [3, 3, 0, 24]
    assert [read_marker(f) for f in decode_frames(marked / "m30.mp4", idx)] == idx


def test_rotated_clip_is_upright(marked):
    frames = decode_frames(marked / "phone.mp4", [0])
    assert frames[0].shape == (64, 96, 3)                    # as stored: 96x64
    frames = decode_frames(marked / "phone.mp4", [0], rotation=90)
    assert frames[0].shape == (96, 64, 3)                    # stored 96x64, displayed 64x96
    # the marker row (bottom edge when stored) is on the left after a 90-degree counter-clockwise turn
    assert read_marker(np.rot90(frames[0], -1)) == 0
    r = scan_preset(preset_for(marked, num_frames=9))
    s = next(x for x in r.samples if x.relpath == "phone.mp4")
    assert (s.width, s.height) == (64, 112)
    assert read_sample_frames(s).shape == (9, 112, 64, 3)


def test_fit_frame_covers_then_centre_crops():
    img = np.zeros((100, 200, 3), np.uint8)
    img[:, :40] = 255                                          # white at the left: cropped away for 1:1
    out = fit_frame(img, 64, 64)
    assert out.shape == (64, 64, 3) and out.max() == 0
    img[:] = 0
    img[:, 90:110] = 255                                       # a centred stripe survives
    out = fit_frame(img, 32, 32)
    assert out[:, 16].min() > 200 and out[:, 0].max() == 0
    assert (fit_frame(img, 200, 100) == img).all()                # already the bucket size: untouched


def test_too_few_frames_is_a_clear_error(marked):
    with pytest.raises(SampleReadError, match=r"m30.mp4: only 25 frames could be decoded, the sample needs frame 40"):
        decode_frames(marked / "m30.mp4", [0, 40])


def test_image_sample(tmp_path):
    from PIL import Image

    Image.new("RGB", (128, 64), (200, 10, 10)).save(tmp_path / "a.png")
    (tmp_path / "a.txt").write_text("red")
    r = scan_preset(preset_for(tmp_path, dataset_type="image"))
    s = r.samples[0]
    out = read_sample_frames(s)
    assert out.shape == (1, s.height, s.width, 3) and abs(int(out[0, 10, 10, 0]) - 200) <= 2
