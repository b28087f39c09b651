import cv2
import numpy as np
import pytest

from motivnet_edge.errors import InvalidImageError, PackageError
from motivnet_edge.preprocess import TEMPLATE_5, Preprocessing, crop_matrix, face_crop, to_tensor


def test_alignment_maps_landmarks_onto_the_template():
    pp = Preprocessing(input_size=(64, 64))
    # Landmarks of a face rotated by 20 degrees, scaled x3 and shifted.
    a = np.deg2rad(20)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    lms = (TEMPLATE_5 * 100) @ rot.T * 3 + [200, 120]
    m = crop_matrix((600, 800), pp, landmarks=lms)
    mapped = lms @ m[:, :2].T + m[:, 2]
    assert np.allclose(mapped, TEMPLATE_5, atol=1e-9)


def test_margin_crop_centres_the_box():
    pp = Preprocessing(input_size=(32, 32), crop="margin")
    img = np.zeros((200, 300), np.uint8)
    cv2.rectangle(img, (100, 50), (159, 109), 255, -1)  # a 60x60 white square
    crop = face_crop(img, pp, box=(100, 50, 60, 60), detector="yunet")
    assert crop.shape == (32, 32)
    assert crop[16, 16] == 255 and crop.mean() > 200  # the box fills the crop


def test_whole_image_crop_and_colour_orders():
    img = np.zeros((40, 40, 3), np.uint8)
    img[..., 2] = 200  # red in BGR
    rgb = face_crop(img, Preprocessing(input_size=(16, 16), color="rgb", mean=(0, 0, 0), std=(1, 1, 1)))
    bgr = face_crop(img, Preprocessing(input_size=(16, 16), color="bgr", mean=(0, 0, 0), std=(1, 1, 1)))
    assert rgb[..., 0].mean() == 200 and bgr[..., 2].mean() == 200
    assert face_crop(img, Preprocessing(input_size=(16, 16))).shape == (16, 16)


def test_big_downscale_is_antialiased():
    # A fine checkerboard must average to grey, not alias into stripes.
    board = (np.indices((960, 960)).sum(0) % 2 * 255).astype(np.uint8)
    crop = face_crop(board, Preprocessing(input_size=(48, 48)))
    assert abs(crop.astype(float).mean() - 127.5) < 3 and crop.std() < 10


def test_to_tensor_normalises_and_checks_shape():
    pp = Preprocessing(input_size=(8, 8), mean=(100.0,), std=(50.0,))
    x = to_tensor(np.full((2, 8, 8), 150, np.uint8), pp)
    assert x.shape == (2, 1, 8, 8) and x.dtype == np.float32 and np.allclose(x, 1.0)
    with pytest.raises(InvalidImageError, match="face_crop"):
        to_tensor(np.zeros((2, 9, 9), np.uint8), pp)


def test_invalid_preprocessing_is_named():
    with pytest.raises(PackageError, match="color"):
        Preprocessing(color="cmyk")
    with pytest.raises(PackageError, match="mean/std"):
        Preprocessing(color="rgb")
    with pytest.raises(PackageError, match="unknown preprocessing fields"):
        Preprocessing.from_dict({"size": 3})
    pp = Preprocessing(input_size=(56, 48), color="rgb", mean=(1, 2, 3), std=(4, 5, 6))
    assert Preprocessing.from_dict(pp.to_dict()) == pp


def test_whole_image_crop_equals_cv2_resize():
    img = np.random.default_rng(3).integers(0, 255, (48, 48), dtype=np.uint8)
    pp = Preprocessing(input_size=(64, 64), interpolation="linear")
    ref = cv2.resize(img, (64, 64), interpolation=cv2.INTER_LINEAR)
    assert np.abs(face_crop(img, pp).astype(int) - ref).max() <= 1
    assert np.array_equal(face_crop(img, Preprocessing(input_size=(48, 48))), img)


def test_letterbox_keeps_aspect_with_white_border():
    img = np.zeros((100, 100, 3), np.uint8)  # a black square face into a 64 (h) x 48 (w) input
    pp = Preprocessing(input_size=(64, 48), color="rgb", mean=(0, 0, 0), std=(1, 1, 1), resize="letterbox")
    crop = face_crop(img, pp)
    assert crop.shape == (64, 48, 3)
    assert crop[:7].min() == 255 and crop[-7:].min() == 255  # 8 rows of white top and bottom
    assert crop[12:52].max() == 0
    stretched = face_crop(img, Preprocessing(input_size=(64, 48), color="rgb", mean=(0, 0, 0), std=(1, 1, 1)))
    assert stretched.max() == 0


def test_a_whole_image_wider_than_opencv_warps_is_still_cropped():
    """OpenCV's warp takes sides below 32767 px: a 40000 x 40 strip (1.6 MP) is subsampled first."""
    import numpy as np

    from motivnet_edge.preprocess import Preprocessing, face_crop

    strip = np.tile(np.linspace(0, 255, 40000, dtype=np.float32), (40, 1)).astype(np.uint8)
    crop = face_crop(strip, Preprocessing(input_size=(48, 48)))
    assert crop.shape == (48, 48) and crop[:, 0].mean() < 20 and crop[:, -1].mean() > 235
