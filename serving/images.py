"""Checks on uploaded files before they reach the model: what is not an image, or one with
absurd dimensions (a decompression bomb), gets a clear 4xx without being decoded. Only the
header is read here (Pillow); a file that is cut short fails in the model's own decoder, and
customize_service.py answers that with a 400 too."""
import io

from PIL import Image

from .errors import BadRequest

MAX_BODY_BYTES = 12 * 1024 * 1024  # ModelArts' gateway refuses larger requests
# JPEGs much larger than the input are decoded at 1/8 scale in the graph; other formats are
# decoded in full (4 bytes a pixel, 4 more as float), so they get a lower limit.
MAX_PIXELS = 64000000              # as training's screening: a scan gone wrong, or a bomb
MAX_PIXELS_NOT_JPEG = 24000000     # 6000 x 4000
MAX_FILES = 64                     # images in one request
FORMATS = "JPEG, PNG, GIF, BMP or WebP"
BMP_BITS = (8, 24, 32)             # what TensorFlow's BMP decoder reads


# File signatures of what the model's decoder reads: the bytes that start a file of that
# format, even a cut-off one (WebP: "RIFF", a size, then "WEBP"; see sniff).
SIGNATURES = {b"\xff\xd8\xff": "JPEG", b"\x89PNG\r\n\x1a\n": "PNG", b"GIF87a": "GIF",
              b"GIF89a": "GIF", b"BM": "BMP"}


def sniff(data, signatures=None):
    """The format `data`'s first bytes announce, among `signatures` (default: those the model
    reads) and WebP; None for anything else."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    for magic, kind in (signatures or SIGNATURES).items():
        if data.startswith(magic):
            return kind
    return None


def read_upload(name, upload, limit=MAX_BODY_BYTES):
    """The bytes of one uploaded file: a file object (ModelArts passes those, werkzeug too),
    bytes, or a path. Reads at most limit + 1 bytes, so a huge stream is refused cheaply."""
    if isinstance(upload, (bytes, bytearray)):
        data = bytes(upload)
    elif hasattr(upload, "read"):
        data = upload.read(limit + 1)
    elif isinstance(upload, str):
        with open(upload, "rb") as f:
            data = f.read(limit + 1)
    else:
        raise BadRequest("file {!r}: expected an uploaded file, got {}".format(
            name, type(upload).__name__))
    if len(data) > limit:
        raise BadRequest("file {!r} is over {} MB, the gateway's limit: send a smaller "
                         "image".format(name, limit // (1024 * 1024)), status=413)
    return data


def check_image(name, data, max_pixels=MAX_PIXELS):
    """Refuse, with the reason, a file the model must not decode; returns its format."""
    if not data:
        raise BadRequest("file {!r} is empty".format(name))
    kind = sniff(data)
    if kind is None:
        raise BadRequest("file {!r} is not a {} image (it starts with {!r})".format(
            name, FORMATS, data[:8]), status=415)
    try:  # Pillow warns above its own limit (not an error: the size is checked below)
        width, height = Image.open(io.BytesIO(data)).size
    except Image.DecompressionBombError:
        raise BadRequest("file {!r} claims absurd dimensions (a decompression bomb?); send "
                         "an image under {} pixels".format(name, max_pixels), status=413) \
            from None
    except Exception as exc:  # Pillow raises many kinds for a broken header
        raise BadRequest("file {!r} is cut short or corrupt: its {} header cannot be read "
                         "({})".format(name, kind, str(exc).splitlines()[0][:120]
                                       if str(exc) else type(exc).__name__)) from None
    limit = max_pixels if kind == "JPEG" else min(max_pixels, MAX_PIXELS_NOT_JPEG)
    if width * height > limit:
        raise BadRequest("file {!r} is {} x {} pixels, over the limit of {} for {}: resize "
                         "it first".format(name, width, height, limit, kind), status=413)
    bits = int.from_bytes(data[28:30], "little") if kind == "BMP" else None
    if bits is not None and bits not in BMP_BITS:
        raise BadRequest("file {!r} is a {}-bit BMP; the model reads 8, 24 and 32-bit BMPs: "
                         "save it as PNG or JPEG".format(name, bits), status=415)
    return kind


def files_of(data, field="images", max_files=MAX_FILES, max_pixels=MAX_PIXELS):
    """ModelArts' request shape {"images": {"<file name>": <file>}} -> [(name, bytes)], in
    request order, every one checked."""
    if not isinstance(data, dict) or field not in data:
        got = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise BadRequest("no {!r} field in the request (got {}): send the images as "
                         "multipart form field {!r}, e.g. curl -F {}=@x.jpg".format(
                             field, got, field, field))
    uploads = data[field]
    if not isinstance(uploads, dict) or not uploads:
        raise BadRequest("field {!r} holds no file: send at least one image".format(field))
    if len(uploads) > max_files:
        raise BadRequest("{} files in one request; send at most {}".format(
            len(uploads), max_files), status=413)
    files = []
    for name, upload in uploads.items():
        content = read_upload(name, upload)
        check_image(name, content, max_pixels)
        files.append((name, content))
    return files
