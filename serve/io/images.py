"""A fetched picture checked before it takes a place in the GPU queue: a PNG, JPEG or WebP whose
header and pixels decode, no larger than the server accepts (read from the header first, so a
decompression bomb is refused before it is decoded)."""

from __future__ import annotations

import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from serve.errors import ServeError

FORMATS = frozenset({"PNG", "JPEG", "WEBP"})
MAX_SIDE = 8192


def check_image(path: Path, field: str, max_pixels: int) -> tuple[int, int]:
    """(width, height) of a usable picture; 422 `invalid_image` or 413 `input_too_large` otherwise."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as picture:
                kind, (width, height) = picture.format, picture.size
                if kind not in FORMATS:
                    raise ServeError(
                        "invalid_image", f"{field} is {kind or 'an unknown format'}, not PNG, JPEG or WebP"
                    )
                if width > MAX_SIDE or height > MAX_SIDE or width * height > max_pixels:
                    raise ServeError(
                        "input_too_large",
                        f"{field} is {width}x{height}; at most {MAX_SIDE} a side and {max_pixels} pixels",
                    )
                picture.load()  # every pixel decodes, not just the header
    except ServeError:
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):
        raise ServeError("input_too_large", f"{field} has more pixels than this server decodes") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ServeError("invalid_image", f"{field} is not a usable PNG, JPEG or WebP picture ({exc})") from None
    return width, height
