"""Checks that a frame's image bytes decode, before they reach tf.data."""

import io

from PIL import Image

# What `tf.io.decode_image` decodes (MPO is a camera JPEG with extra frames).
DECODABLE_FORMATS = ("PNG", "JPEG", "MPO", "GIF", "BMP", "WEBP")


def image_problem(image):
    """Returns why an encoded image cannot be used, or None when it decodes.

    The whole image is decoded, so truncated files are caught here rather
    than mid-epoch in the pipeline. Formats that PIL reads but the tf.data
    pipeline cannot (TIFF, for one) are refused too. Any mode is fine
    (grayscale, palette, RGBA, CMYK, 16-bit): the pipeline converts to RGB.

    Args:
        image: bytes, or str path of an image file.

    Example:
    >>> image_problem(b"")
    'zero-byte image'
    """
    if image is None:
        return "missing image"
    if isinstance(image, (bytes, bytearray)):
        if not image:
            return "zero-byte image"
        source = io.BytesIO(image)
    else:
        source = image
    try:
        with Image.open(source) as decoded:
            decoded.load()
            if decoded.width == 0 or decoded.height == 0:
                return f"empty image ({decoded.width}x{decoded.height})"
            if decoded.format not in DECODABLE_FORMATS:
                return (
                    f"unsupported image format {decoded.format} "
                    f"(kstory reads {', '.join(DECODABLE_FORMATS)})"
                )
    except FileNotFoundError:
        return f"no file at {image}"
    except Exception as error:  # PIL raises many types for bad bytes.
        return f"undecodable image ({type(error).__name__}: {error})"
    return None
