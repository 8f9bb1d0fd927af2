"""Request bodies -> uint8 image tensors 3×H×W (grey -> 3 channels), with limits checked first.

Accepted: PNG/JPEG files (multipart or base64 in JSON), or a raw uint8 array — `application/
octet-stream` with an `X-Array-Shape: N,3,H,W` header (also N,1,H,W or N,H,W for grey), or an
.npy body (loaded with allow_pickle=False). Resizing is left to the encoder. Every problem raises
BadInput(status, message): 413 for anything too large, 422 for anything malformed.
"""

from __future__ import annotations

import base64
import binascii
import io

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

IMAGE_FORMATS = ["PNG", "JPEG"]
NPY_MAGIC = b"\x93NUMPY"


class BadInput(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def check_count(n: int, max_batch: int) -> None:
    if n == 0:
        raise BadInput(422, "empty batch: send at least one image")
    if n > max_batch:
        raise BadInput(413, f"batch of {n} images is larger than the limit of {max_batch} per request; split it")


def _check_side(h: int, w: int, max_side: int, what: str) -> None:
    if max(h, w) > max_side:
        raise BadInput(413, f"{what} is {w}×{h} pixels; the largest side allowed is {max_side}")
    if min(h, w) < 1:
        raise BadInput(422, f"{what} has an empty side ({w}×{h})")


def decode_image(data: bytes, max_side: int, what: str = "image") -> torch.Tensor:
    """PNG/JPEG bytes -> uint8 3×H×W. The size is checked from the header before pixels are decoded."""
    if not data:
        raise BadInput(422, f"{what} is empty (0 bytes)")
    try:
        with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as im:
            _check_side(im.height, im.width, max_side, what)
            im.load()
            rgb = im.convert("RGB")
    except BadInput:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError) as exc:
        raise BadInput(422, f"{what} is not a PNG or JPEG image ({exc.__class__.__name__})") from None
    except (OSError, SyntaxError, ValueError, TypeError) as exc:
        raise BadInput(422, f"{what} is a corrupt or unsupported image: {exc}") from None
    return torch.from_numpy(np.asarray(rgb, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


def decode_base64_image(text: str, max_side: int, what: str) -> torch.Tensor:
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BadInput(422, f"{what} is not valid base64") from None
    return decode_image(data, max_side, what)


def _array_to_images(arr: np.ndarray, max_batch: int, max_side: int) -> torch.Tensor:
    if arr.dtype != np.uint8:
        raise BadInput(422, f"array dtype is {arr.dtype}; send uint8 pixels in [0, 255]")
    if arr.ndim == 3:
        arr = arr[:, None]
    if arr.ndim != 4 or arr.shape[1] not in (1, 3):
        raise BadInput(422, f"array shape {tuple(arr.shape)} is not N×3×H×W (or N×1×H×W / N×H×W for grey)")
    check_count(arr.shape[0], max_batch)
    _check_side(arr.shape[2], arr.shape[3], max_side, "array image")
    t = torch.from_numpy(np.array(arr, dtype=np.uint8, order="C", copy=True))
    return t.expand(-1, 3, -1, -1).contiguous() if t.shape[1] == 1 else t


def parse_shape(header: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(s) for s in header.replace("x", ",").replace("×", ",").split(",") if s.strip())
    except ValueError:
        raise BadInput(422, f"X-Array-Shape {header!r} is not a comma-separated list of integers") from None
    if not shape or any(s < 0 for s in shape):
        raise BadInput(422, f"X-Array-Shape {header!r} is not a valid shape")
    return shape


def decode_raw(body: bytes, shape_header: str | None, dtype_header: str | None, max_batch: int, max_side: int) -> torch.Tensor:
    """application/octet-stream body: .npy (by magic) or raw uint8 C-order bytes of X-Array-Shape."""
    if body.startswith(NPY_MAGIC):
        return decode_npy(body, max_batch, max_side)
    if not shape_header:
        raise BadInput(422, "raw array body needs an X-Array-Shape header (e.g. 'N,3,32,32') or an .npy body")
    if dtype_header and dtype_header.lower() not in ("uint8", "u1", "|u1"):
        raise BadInput(422, f"X-Array-Dtype {dtype_header!r} is not supported; send uint8")
    shape = parse_shape(shape_header)
    if len(shape) in (3, 4):
        check_count(shape[0], max_batch)
    expected = int(np.prod(shape, dtype=np.int64))
    if expected != len(body):
        raise BadInput(422, f"X-Array-Shape {shape} needs {expected} bytes of uint8, the body has {len(body)}")
    return _array_to_images(np.frombuffer(body, dtype=np.uint8).reshape(shape), max_batch, max_side)


def decode_npy(body: bytes, max_batch: int, max_side: int) -> torch.Tensor:
    try:
        arr = np.load(io.BytesIO(body), allow_pickle=False)
    except ValueError as exc:
        raise BadInput(422, f"not a valid .npy array (object arrays and pickles are refused): {exc}") from None
    except (OSError, EOFError) as exc:
        raise BadInput(422, f"truncated or corrupt .npy body: {exc}") from None
    if not isinstance(arr, np.ndarray):
        raise BadInput(422, "the .npy body does not hold a single array")
    return _array_to_images(arr, max_batch, max_side)
