"""course_lib.data.images: offline digits and photographs as tensors in [-1, 1]."""

import numpy as np
import pytest
import torch

from course_lib.data import PHOTOS, load_digits_tensor, load_photo, to_display


def test_digits_native_size_matches_sklearn():
    from sklearn.datasets import load_digits

    images, labels = load_digits_tensor(8)
    raw = load_digits()
    assert images.shape == (1797, 1, 8, 8) and labels.shape == (1797,)
    assert labels.dtype == torch.long and set(labels.tolist()) == set(range(10))
    np.testing.assert_allclose(images[:, 0].numpy(), raw.images / 8.0 - 1.0, atol=1e-6)
    np.testing.assert_array_equal(labels.numpy(), raw.target)


def test_digits_resized_stay_in_range():
    images, _ = load_digits_tensor(16)
    assert images.shape == (1797, 1, 16, 16)
    assert images.min() >= -1.0 and images.max() <= 1.0
    assert images.max() > 0.9 and images.min() == -1.0


@pytest.mark.parametrize("name", PHOTOS)
def test_photos(name):
    x = load_photo(name, size=64)
    assert x.shape == (1, 3, 64, 64) and x.dtype == torch.float32
    assert x.min() >= -1.0 and x.max() <= 1.0 and x.std() > 0.1


def test_photo_native_size_and_values():
    import skimage.data

    x = load_photo("astronaut")
    raw = skimage.data.astronaut()
    assert x.shape == (1, 3, 512, 512)
    np.testing.assert_allclose(x[0].permute(1, 2, 0).numpy(), raw / 127.5 - 1.0, atol=1e-6)
    np.testing.assert_allclose(to_display(x)[0], raw / 255.0, atol=1e-6)


def test_bad_inputs():
    with pytest.raises(ValueError, match="unknown photo 'lena'"):
        load_photo("lena")
    with pytest.raises(ValueError, match="size must be a positive int"):
        load_digits_tensor(0)
    with pytest.raises(ValueError, match="size must be a positive int"):
        load_photo("astronaut", size=2.5)
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        to_display(torch.zeros(3, 4, 4))
