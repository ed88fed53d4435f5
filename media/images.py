"""Image path: Pillow decode with EXIF orientation, RGB, longest side resized, JPEG."""
from __future__ import annotations

import io
import warnings

from PIL import Image, ImageOps, UnidentifiedImageError

MAX_PIXELS = 64_000_000  # decompression-bomb guard: above this an image is rejected, not decoded


class ImageError(ValueError):
    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def prepare_image(data: bytes, longest_side: int = 256, quality: int = 90) -> tuple[bytes, tuple[int, int]]:
    """JPEG bytes of the image, oriented, RGB, longest side at most `longest_side`; and the original size."""
    if not data:
        raise ImageError("empty_media")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            size = img.size
            if size[0] * size[1] > MAX_PIXELS:
                raise ImageError("image_too_large", f"{size[0]}x{size[1]}")
            img.draft("RGB", (longest_side, longest_side))  # JPEG: decode at a reduced scale
            img = ImageOps.exif_transpose(img)
            img = img.convert("RGB")
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageError("image_too_large", str(err)[:100]) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ImageError("undecodable_image", type(err).__name__) from None
    img.thumbnail((longest_side, longest_side), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality, optimize=False)
    return buf.getvalue(), size
