"""Request bodies -> uint8 image groups, every size checked before anything is allocated.

Accepted: PNG/JPEG files (multipart or base64 in JSON), or a raw uint8 array — `application/
octet-stream` with an `X-Array-Shape: N,3,H,W` header (also N,1,H,W or N,H,W for grey), or an
.npy body (its header parsed here, never unpickled). Resizing is left to the encoder.

Limits (`Limits`): images per request, the largest side, and a budget of decoded pixels per request
(H×W summed over the images), checked from the declared shape or the image headers before pixels are
decoded, so a small body cannot make the server allocate much (PNG of flat colour, .npy header lies).
A decoded request is a list of `Group`s (same-size images in one uint8 k×3×H×W tensor, request order
kept by `index`): raw arrays are a view of the body, images are decoded straight into their group.
Every problem raises BadInput(status, message): 413 for anything too large, 422 for anything malformed.
"""

from __future__ import annotations

import base64
import binascii
import io
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

IMAGE_FORMATS = ["PNG", "JPEG"]
NPY_MAGIC = b"\x93NUMPY"
UINT8_NAMES = ("uint8", "u1", "|u1", "<u1", ">u1", "=u1", "b")


class BadInput(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Limits:
    max_batch: int  # images per request
    max_side: int  # pixels, height and width
    max_pixels: int  # decoded pixels (H×W, summed over images) per request


@dataclass
class Group:
    """Images of one size: uint8 k×3×H×W, and their positions in the request."""

    index: list[int]
    images: torch.Tensor


def count_of(groups: list[Group]) -> int:
    return sum(len(g.index) for g in groups)


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


def _check_pixels(total: int, limits: Limits) -> None:
    if total > limits.max_pixels:
        raise BadInput(
            413,
            f"the request's images hold {total} pixels once decoded; the limit is {limits.max_pixels} pixels per request "
            f"(for example {max(1, limits.max_pixels // 1024)} images of 32×32); split it",
        )


# ---- arrays -----------------------------------------------------------------------------------
def check_array_shape(shape: tuple[int, ...], limits: Limits) -> tuple[int, int, int, int]:
    """A declared N×C×H×W (or N×H×W) shape -> (N, C, H, W), refused before any allocation: Python ints,
    so no overflow whatever the header says."""
    if len(shape) == 3:
        shape = (shape[0], 1, shape[1], shape[2])
    if len(shape) != 4 or shape[1] not in (1, 3):
        raise BadInput(422, f"array shape {tuple(shape)} is not N×3×H×W (or N×1×H×W / N×H×W for grey)")
    n, c, h, w = shape
    check_count(n, limits.max_batch)
    _check_side(h, w, limits.max_side, "array image")
    _check_pixels(n * h * w, limits)
    return n, c, h, w


def _array_group(buffer, offset: int, shape: tuple[int, int, int, int], fortran: bool = False) -> list[Group]:
    n, c, h, w = shape
    flat = torch.frombuffer(buffer, dtype=torch.uint8, count=n * c * h * w, offset=offset) if n * c * h * w else torch.zeros(0, dtype=torch.uint8)
    if fortran:
        t = flat.reshape(w, h, c, n).permute(3, 2, 1, 0).contiguous()
    else:
        t = flat.reshape(n, c, h, w)
    if c == 1:
        t = t.expand(-1, 3, -1, -1).contiguous()
    return [Group(list(range(n)), t)]


def parse_shape(header: str) -> tuple[int, ...]:
    parts = [s.strip() for s in header.replace("x", ",").replace("×", ",").split(",") if s.strip()]
    if not parts or len(parts) > 8 or any(not p.isdigit() or len(p) > 30 for p in parts):
        raise BadInput(422, f"X-Array-Shape {header[:100]!r} is not a comma-separated list of up to 8 non-negative integers")
    return tuple(int(p) for p in parts)


def _check_dtype(dtype_header: str | None) -> None:
    if dtype_header and dtype_header.lower() not in UINT8_NAMES:
        raise BadInput(422, f"X-Array-Dtype {dtype_header[:40]!r} is not supported; send uint8")


def decode_raw(body, shape_header: str | None, dtype_header: str | None, limits: Limits) -> list[Group]:
    """application/octet-stream body: .npy (by magic) or raw uint8 C-order bytes of X-Array-Shape."""
    if bytes(body[: len(NPY_MAGIC)]) == NPY_MAGIC:
        return decode_npy(body, limits)
    if not shape_header:
        raise BadInput(422, "raw array body needs an X-Array-Shape header (e.g. 'N,3,32,32') or an .npy body")
    _check_dtype(dtype_header)
    shape = parse_shape(shape_header)
    dims = check_array_shape(shape, limits)
    expected = dims[0] * dims[1] * dims[2] * dims[3]
    if expected != len(body):
        raise BadInput(422, f"X-Array-Shape {shape} needs {expected} bytes of uint8, the body has {len(body)}")
    return _array_group(body, 0, dims)


def decode_npy(body, limits: Limits) -> list[Group]:
    """An .npy body: the header is read and checked (dtype, shape, limits, length) before the data is touched."""
    fp = io.BytesIO(bytes(body[:65536 + 16]))
    try:
        version = np.lib.format.read_magic(fp)
        read = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}.get(version)
        if read is None:
            raise BadInput(422, f".npy format version {version} is not supported; save with numpy's default (1.0)")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            shape, fortran, dtype = read(fp, max_header_size=10000)
    except BadInput:
        raise
    except (ValueError, TypeError, SyntaxError, EOFError, OSError) as exc:
        raise BadInput(422, f"not a valid .npy array (object arrays and pickles are refused): {str(exc)[:200]}") from None
    if dtype.hasobject:
        raise BadInput(422, "the .npy body holds Python objects (a pickle); object arrays and pickles are refused")
    if dtype != np.uint8:
        raise BadInput(422, f"array dtype is {dtype}; send uint8 pixels in [0, 255]")
    dims = check_array_shape(tuple(int(s) for s in shape), limits)
    offset, expected = fp.tell(), dims[0] * dims[1] * dims[2] * dims[3]
    if len(body) - offset != expected:
        raise BadInput(422, f".npy header declares shape {tuple(shape)} ({expected} bytes of data), the body holds {len(body) - offset}")
    return _array_group(body, offset, dims, fortran=bool(fortran) and len(shape) > 1)


# ---- images -----------------------------------------------------------------------------------
def _open(data: bytes, limits: Limits, what: str) -> Image.Image:
    """Open lazily (the header only) and check the size."""
    if not data:
        raise BadInput(422, f"{what} is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
    except Image.DecompressionBombError as exc:
        raise BadInput(413, f"{what} is far too large ({exc}); the largest side allowed is {limits.max_side}") from None
    except UnidentifiedImageError as exc:
        raise BadInput(422, f"{what} is not a PNG or JPEG image ({exc.__class__.__name__})") from None
    except (OSError, SyntaxError, ValueError, TypeError) as exc:
        raise BadInput(422, f"{what} is a corrupt or unsupported image: {str(exc)[:200]}") from None
    _check_side(im.height, im.width, limits.max_side, what)
    return im


def _pixels(im: Image.Image, what: str) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im.load()
            rgb = im if im.mode == "RGB" else im.convert("RGB")
            return np.asarray(rgb, dtype=np.uint8)
    except (OSError, SyntaxError, ValueError, TypeError, Image.DecompressionBombError) as exc:
        raise BadInput(422, f"{what} is a corrupt or unsupported image: {str(exc)[:200]}") from None
    finally:
        im.close()


def decode_images(files: list[tuple[str, bytes]], limits: Limits) -> list[Group]:
    """PNG/JPEG bytes -> groups. All headers are read (sizes, the pixel budget) before any pixel is decoded."""
    check_count(len(files), limits.max_batch)
    opened, total = [], 0
    try:
        for what, data in files:
            im = _open(data, limits, what)
            opened.append((what, im))
            total += im.width * im.height
            _check_pixels(total, limits)
        sizes: dict[tuple[int, int], list[int]] = {}
        for i, (_, im) in enumerate(opened):
            sizes.setdefault((im.height, im.width), []).append(i)
        groups = []
        for (h, w), idx in sizes.items():
            out = torch.empty(len(idx), 3, h, w, dtype=torch.uint8)
            for slot, i in enumerate(idx):
                what, im = opened[i]
                px = _pixels(im, what)
                if px.shape[:2] != (h, w):
                    raise BadInput(422, f"{what} decoded to another size than its header declares")
                np.copyto(out[slot].permute(1, 2, 0).numpy(), px)
                opened[i] = (what, None)
            groups.append(Group(idx, out))
        return groups
    finally:
        for _, im in opened:
            if im is not None:
                im.close()


def decode_image(data: bytes, max_side: int, what: str = "image") -> torch.Tensor:
    """One PNG/JPEG -> uint8 3×H×W (size checked from the header before decoding)."""
    (group,) = decode_images([(what, data)], Limits(1, max_side, max_side * max_side))
    return group.images[0]


def b64_bytes(text: str, what: str) -> bytes:
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BadInput(422, f"{what} is not valid base64") from None


def decode_base64_image(text: str, max_side: int, what: str) -> torch.Tensor:
    return decode_image(b64_bytes(text, what), max_side, what)
