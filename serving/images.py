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
# Pixels of every non-JPEG image of one request together: each is decoded in full, so 64
# lossless WebPs of 24 Mpx (1 kB each) would cost gigabytes; JPEGs are decoded reduced.
MAX_REQUEST_PIXELS_NOT_JPEG = 24000000
FORMATS = "JPEG, PNG, GIF, BMP or WebP"
BMP_BITS = (24, 32)                # what TensorFlow's BMP decoder reads right: it ignores a
BMP_COMPRESSIONS = (0, 3)          # colour table (8 bits and fewer) and RLE compression


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
    """The bytes of one uploaded file: a file object (ModelArts passes those, werkzeug too) or
    bytes. Never a string: a request's text is not a path to open on this machine. Reads at
    most limit + 1 bytes, so a huge stream is refused cheaply."""
    if isinstance(upload, (bytes, bytearray)):
        data = bytes(upload)
    elif hasattr(upload, "read"):
        data = upload.read(limit + 1)
    else:
        raise BadRequest("file {!r}: expected an uploaded file, got {}".format(
            name, type(upload).__name__))
    if len(data) > limit:
        raise BadRequest("file {!r} is over {} MB, the gateway's limit: send a smaller "
                         "image".format(name, limit // (1024 * 1024)), status=413)
    return data


def check_image(name, data, max_pixels=MAX_PIXELS):
    """Refuse, with the reason, a file the model must not decode; returns (its format, its
    pixels)."""
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
    if kind == "BMP":
        _check_bmp(name, data)
    if kind == "GIF":
        _check_gif(name, data, width, height)
    return kind, width * height


def _check_bmp(name, data):
    bits = int.from_bytes(data[28:30], "little")
    compression = int.from_bytes(data[30:34], "little")
    if bits not in BMP_BITS or compression not in BMP_COMPRESSIONS:
        what = "{}-bit".format(bits) + (", compressed" if compression not in
                                        BMP_COMPRESSIONS else "")
        what = ("an " if what[0] == "8" or what[:2] in ("11", "18") else "a ") + what
        raise BadRequest("file {!r} is {} BMP; the model reads uncompressed 24 and 32-bit "
                         "BMPs (its decoder ignores colour tables and RLE): save it as PNG or "
                         "JPEG".format(name, what), status=415)


def _check_gif(name, data, width, height):
    """One frame, inside the logical screen: TensorFlow's decoder decodes every frame of a GIF
    (then keeps the first), each at its own size, so a 10 x 10 GIF may hold an 8000 x 8000
    frame or 900 full ones. The blocks are walked without decoding any pixel."""
    frames, at = 0, 13
    if data[10] & 0x80:  # global colour table
        at += 3 * 2 ** ((data[10] & 7) + 1)
    while at < len(data):
        block = data[at]
        if block == 0x3B:  # trailer
            break
        if block == 0x21:  # extension: label, then sub-blocks
            at = _skip_sub_blocks(data, at + 2)
            continue
        if block != 0x2C:
            break  # not GIF structure: the decoder refuses it (a 400 there)
        left, top, w, h = (int.from_bytes(data[at + i:at + i + 2], "little")
                           for i in (1, 3, 5, 7))
        frames += 1
        if frames > 1:
            raise BadRequest("file {!r} is an animated GIF; send one frame (as PNG or "
                             "JPEG)".format(name), status=415)
        if left + w > width or top + h > height:
            raise BadRequest("file {!r} has a GIF frame of {} x {} outside its {} x {} "
                             "screen (a decompression bomb?)".format(name, w, h, width, height),
                             status=413)
        packed = data[at + 9] if at + 9 < len(data) else 0
        at += 10 + (3 * 2 ** ((packed & 7) + 1) if packed & 0x80 else 0)
        at = _skip_sub_blocks(data, at + 1)  # after the LZW minimum code size


def _skip_sub_blocks(data, at):
    """The position after a chain of GIF sub-blocks (size byte, data), ended by size 0."""
    while at < len(data) and data[at]:
        at += data[at] + 1
    return at + 1


def file_field(data, field="images"):
    """Which field of a request holds the files: `field` when present, else the only field
    that holds files (the 2019 contest's judge posted `input_img`; any single name works)."""
    if not isinstance(data, dict):
        raise BadRequest("expected form fields with files, got {}: send the images as "
                         "multipart form field {!r}, e.g. curl -F {}=@x.jpg".format(
                             type(data).__name__, field, field))
    if field in data:
        return field
    with_files = [key for key, value in data.items() if isinstance(value, dict)]
    if len(with_files) == 1:
        return with_files[0]
    if with_files:
        raise BadRequest("files came in several fields ({}): send them all in field "
                         "{!r}".format(", ".join(sorted(with_files)), field))
    raise BadRequest("no file in the request (got {}): send the images as multipart form "
                     "field {!r}, e.g. curl -F {}=@x.jpg".format(
                         ", ".join(sorted(data)) or "nothing", field, field))


def files_of(data, field="images", max_files=MAX_FILES, max_pixels=MAX_PIXELS):
    """ModelArts' request shape {"images": {"<file name>": <file>}} (or one other field name)
    -> [(name, bytes)], in request order, every one checked."""
    field = file_field(data, field)
    uploads = data[field]
    if not isinstance(uploads, dict) or not uploads:
        raise BadRequest("field {!r} holds no file: send at least one image".format(field))
    if len(uploads) > max_files:
        raise BadRequest("{} files in one request; send at most {}".format(
            len(uploads), max_files), status=413)
    files, full_pixels = [], 0
    for name, upload in uploads.items():
        content = read_upload(name, upload)
        kind, pixels = check_image(name, content, max_pixels)
        full_pixels += pixels if kind != "JPEG" else 0
        if full_pixels > MAX_REQUEST_PIXELS_NOT_JPEG:
            raise BadRequest("the request's PNG, GIF, BMP and WebP images hold over {} pixels "
                             "together (each is decoded in full): send fewer or smaller "
                             "images per request".format(MAX_REQUEST_PIXELS_NOT_JPEG),
                             status=413)
        files.append((name, content))
    return files
