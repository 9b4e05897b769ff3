"""Next-image scores: MSE, PSNR and SSIM, for images in [0, 1]."""

import numpy as np


def _gaussian_window(size=11, sigma=1.5):
    coordinates = np.arange(size, dtype=np.float64) - (size - 1) / 2
    window = np.exp(-(coordinates**2) / (2 * sigma**2))
    return window / window.sum()


def _filter_valid(images, window):
    """Separable 'valid' filtering over the two spatial axes of (N, H, W, C)."""
    size = len(window)
    rows = sum(window[i] * images[:, i : images.shape[1] - size + 1 + i] for i in range(size))
    return sum(window[i] * rows[:, :, i : rows.shape[2] - size + 1 + i] for i in range(size))


def ssim(predicted, target, max_value=1.0):
    """Mean SSIM (Wang et al., 2004) per image, 11x11 Gaussian window, sigma 1.5.

    Matches `tf.image.ssim`'s definition. Images smaller than the window use a
    window of their size.

    Args:
        predicted: float array `(batch, height, width, channels)`.
        target: float array of the same shape.
        max_value: float. The dynamic range.

    Returns:
        float array `(batch,)`.
    """
    predicted = np.asarray(predicted, np.float64)
    target = np.asarray(target, np.float64)
    size = min(11, predicted.shape[1], predicted.shape[2])
    window = _gaussian_window(size)
    c1, c2 = (0.01 * max_value) ** 2, (0.03 * max_value) ** 2
    mean_x, mean_y = _filter_valid(predicted, window), _filter_valid(target, window)
    var_x = _filter_valid(predicted**2, window) - mean_x**2
    var_y = _filter_valid(target**2, window) - mean_y**2
    covariance = _filter_valid(predicted * target, window) - mean_x * mean_y
    luminance = (2 * mean_x * mean_y + c1) / (mean_x**2 + mean_y**2 + c1)
    structure = (2 * covariance + c2) / (var_x + var_y + c2)
    return (luminance * structure).mean(axis=(1, 2, 3))


def image_scores(predicted, target):
    """MSE, PSNR (dB, mean over images) and SSIM of predicted next frames."""
    predicted = np.clip(np.asarray(predicted, np.float64), 0, 1)
    target = np.asarray(target, np.float64)
    if predicted.shape != target.shape:
        raise ValueError(f"Predicted images {predicted.shape} and targets {target.shape} differ.")
    mse = ((predicted - target) ** 2).mean(axis=(1, 2, 3))
    psnr = 10 * np.log10(1.0 / np.maximum(mse, 1e-10))
    return {
        "MSE": float(mse.mean()),
        "PSNR": float(psnr.mean()),
        "SSIM": float(ssim(predicted, target).mean()),
    }
