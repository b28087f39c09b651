"""Streams: videos and cameras frame by frame, tracks and smoothing, detection cadence, bad frames."""

import cv2
import numpy as np
import pytest

from motivnet_edge import EmotionRecognizer, RecognizerOptions
from motivnet_edge.errors import InvalidImageError, OptionError


def test_stream_keeps_track_ids_and_smooths(rec, astronaut):
    """Track ids stay; each frame's scores are exactly the EMA of the raw scores (weight 0.6 on the past)."""
    frames = [np.roll(astronaut, 4 * i, axis=1) for i in range(3)] + [(astronaut * 0.6).astype(np.uint8),
                                                                     (astronaut * 0.8 + 30).astype(np.uint8)]
    results = list(rec.stream(frames))
    assert [len(r) for r in results] == [1] * 5
    assert len({r[0].track_id for r in results}) == 1
    labels = list(results[0][0].scores)
    raw = [np.array([rec.predict(f)[0].scores[k] for k in labels]) for f in frames]
    assert max(np.abs(raw[i] - raw[i - 1]).max() for i in range(1, 5)) > 1e-3  # the frames do differ
    ema = raw[0]
    for r, x in zip(results, raw):
        ema = x if r is results[0] else rec.options.smoothing * ema + (1 - rec.options.smoothing) * x
        np.testing.assert_allclose([r[0].scores[k] for k in labels], ema, atol=1e-5)


def test_two_faces_get_two_tracks(rec, astronaut):
    face = astronaut[40:220, 130:310]
    canvas = np.full((300, 800, 3), 40, np.uint8)
    canvas[60:240, 50:230], canvas[60:240, 500:680] = face, face
    out = next(rec.stream([canvas]))
    assert len(out) == 2 and {f.track_id for f in out} == {0, 1}


def _clip(path, astronaut, n=6):
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (512, 512))
    for i in range(n):
        w.write(np.roll(astronaut, 3 * i, axis=1))
    w.release()
    return path


def test_stream_reads_a_video_path_and_stops_at_max_frames(rec, astronaut, tmp_path):
    clip = _clip(tmp_path / "clip.avi", astronaut)
    for source in (clip, str(clip)):  # a path, never the characters of a string
        assert [len(r) for r in rec.stream(source)] == [1] * 6
    assert len(list(rec.stream(clip, max_frames=2))) == 2
    assert len(list(rec.stream([astronaut] * 5, max_frames=3))) == 3
    with pytest.raises(InvalidImageError, match="no such file"):
        next(rec.stream(tmp_path / "missing.mp4"))


def test_stream_yields_each_frame_with_its_faces(rec, astronaut, tmp_path):
    clip = _clip(tmp_path / "clip.avi", astronaut)
    out = list(rec.stream(clip))
    assert [r.index for r in out] == list(range(6))
    # the decoded frames themselves, in order (MJPG is lossy: compare to the shifted sources loosely)
    for i, r in enumerate(out):
        assert r.image.shape == astronaut.shape
        assert np.abs(r.image.astype(int) - np.roll(astronaut, 3 * i, axis=1)).mean() < 8
    with pytest.raises(ValueError, match="read-only"):
        out[0].image[0, 0] = 0
    frames = [astronaut.copy() for _ in range(2)]
    res = list(rec.stream(frames))
    assert res[1].image is not frames[1] and np.shares_memory(res[1].image, frames[1])
    frames[1][0, 0] = 0  # the caller's arrays stay writable
    assert res[0].to_dict() == {"frame": 0, "faces": [f.to_dict() for f in res[0]]}


def _cadence_run(tiny_package, yunet_path, frames, **options):
    with EmotionRecognizer.from_pretrained(tiny_package, detector="yunet", yunet_model=yunet_path, threads=1,
                                           detect_every=3, **options) as r:
        calls = {"detect": 0, "refine": 0}
        detect, refine = r.detector.detect, r.detector.refine
        r.detector.detect = lambda img: calls.__setitem__("detect", calls["detect"] + 1) or detect(img)
        r.detector.refine = lambda img, d: calls.__setitem__("refine", calls["refine"] + 1) or refine(img, d)
        return list(r.stream(frames)), calls


def test_stream_cadence_carries_faces_between_detections(tiny_package, yunet_path, astronaut):
    frames = [np.roll(astronaut, 2 * i, axis=1) for i in range(6)]
    # re-location off: the faces of frames 0 and 3 are carried unchanged through the frames after them
    out, calls = _cadence_run(tiny_package, yunet_path, frames, redetect_change=255.0, redetect_drop=1.0)
    assert calls == {"detect": 2, "refine": 0}  # frames 0 and 3
    assert [len(o) for o in out] == [1] * 6 and len({o[0].track_id for o in out}) == 1
    assert out[1][0].box == out[0][0].box and out[3][0].box != out[0][0].box


def test_stream_follows_a_moving_face_between_detections(tiny_package, yunet_path, astronaut):
    """The face moves 6 px a frame: its box follows by template matching, with neither a full
    detection nor a window search by the detector."""
    frames = [np.roll(astronaut, 6 * i, axis=1) for i in range(6)]
    out, calls = _cadence_run(tiny_package, yunet_path, frames)
    assert calls == {"detect": 2, "refine": 0}  # full detections on frames 0 and 3 only
    xs = [np.mean([x for x, _ in o[0].landmarks]) for o in out]  # the face's centre, as aligned
    # carried unchanged, frames 2 and 5 would be 12 px behind; followed they are within YuNet's own jitter
    assert all(abs(x - (xs[0] + 6 * i)) < 5 for i, x in enumerate(xs)), xs
    assert len({o[0].track_id for o in out}) == 1


def test_stream_asks_the_detector_when_the_face_no_longer_matches(tiny_package, yunet_path, astronaut):
    """The face grows 12 % a frame (a camera zooming in): the template no longer matches, and
    the detector searches the window around the face instead."""
    import cv2

    h, w = astronaut.shape[:2]
    frames = []
    for i in range(3):
        z = 1.12 ** i
        big = cv2.resize(astronaut, (round(w * z), round(h * z)), interpolation=cv2.INTER_LINEAR)
        frames.append(np.ascontiguousarray(big[:h, :w]))
    out, calls = _cadence_run(tiny_package, yunet_path, frames)
    assert calls["detect"] == 1 and calls["refine"] >= 1
    sides = [o[0].box[2] for o in out]
    assert sides[2] > sides[0] * 1.15, sides  # the box grew with the face: it was re-detected, not shifted


@pytest.mark.parametrize("field, value, match", [
    ("smoothing", 1.0, "smoothing 1.0 must be in"), ("smoothing", -0.1, "smoothing"),
    ("detect_every", 0, "detect_every 0 must be"), ("redetect_change", -1.0, "redetect_change -1.0 must be"),
    ("redetect_drop", 1.5, "redetect_drop 1.5 in"),
])
def test_stream_options_are_checked_when_the_recognizer_is_built(tiny_package, field, value, match):
    with pytest.raises(OptionError, match=match):
        EmotionRecognizer.create_from_options(RecognizerOptions(model=tiny_package, detector="none",
                                                                **{field: value}))


def test_stream_of_a_corrupt_photo_raises_like_predict(rec, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0" + b"\0" * 40)
    with pytest.raises(InvalidImageError):
        rec.predict(bad)
    with pytest.raises(InvalidImageError):
        list(rec.stream(bad))
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\0" * 4096)
    with pytest.raises(InvalidImageError, match="junk.mp4"):
        list(rec.stream(junk))


def test_video_frames_above_the_pixel_limit_are_refused_before_decoding(rec, tmp_path, monkeypatch):
    import motivnet_edge.media as media

    path = tmp_path / "big.avi"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (640, 480))
    for _ in range(3):
        w.write(np.zeros((480, 640, 3), np.uint8))
    w.release()
    monkeypatch.setattr(media, "MAX_VIDEO_PIXELS", 640 * 480 - 1)
    with pytest.raises(InvalidImageError, match="big.avi: frames of 640x480 pixels"):
        list(rec.stream(path))

