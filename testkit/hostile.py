"""Hostile uploads: generated cases, none of which may break the server. benchmarks/fuzz_uploads.py sends
10,000 of them; tests send fewer.

Deterministic from the seed: random bytes; every accepted format truncated at random points and with
flipped bytes; decompression bombs (tiny PNG/GIF/WebP/TIFF/BMP/JPEG files declaring huge sizes, highly
compressed huge images); 0xN and 1xN images; animated GIFs with thousands of frames; SVG, PDF, HTML, ZIP,
executables named .png; wrong and missing content types; empty, malformed and oversized multipart bodies
and forms with many files; JSON with broken base64 and data URLs, deep JSON; very long URLs and headers;
wrong methods. testkit/fuzz.py sends them and judges the answers.
"""
import base64
import gzip
import io
import json
import struct
import zipfile
import zlib
from collections import namedtuple
from functools import cache

import numpy as np
from PIL import Image

from testkit import ROOT
from testkit.images import encode

Case = namedtuple("Case", "family method path headers body")
IMAGE_ROUTES = ("/predict", "/predict/batch", "/read")


# --- material ------------------------------------------------------------------------------------------

@cache
def digit_page(size=120):
    """A real MNIST digit (the self-test's 3) dark on a light page, RGB."""
    digit = Image.open(ROOT / "serve" / "selftest" / "3.png").convert("L").resize((size // 2, size // 2))
    page = Image.new("L", (size, size), 235)
    page.paste(Image.eval(digit, lambda v: 235 - v * 0.9), (size // 4, size // 4))
    return page.convert("RGB")


@cache
def valid_files():
    """One real file per format and flavour the API accepts."""
    page = digit_page()
    gray = page.convert("L")
    rgba = page.convert("RGBA")
    rgba.putalpha(Image.eval(gray, lambda v: 255 - v))
    sixteen = Image.fromarray(np.asarray(gray, np.uint16) * 257)
    return {
        "png-gray": encode(gray, "PNG"), "png-rgba": encode(rgba, "PNG"), "png-la": encode(gray.convert("LA"), "PNG"),
        "png-palette": encode(page.convert("P"), "PNG"), "png-16bit": encode(sixteen, "PNG"),
        "png-1bit": encode(gray.point(lambda v: 255 if v > 128 else 0).convert("1"), "PNG"),
        "jpeg": encode(page, "JPEG", quality=90), "jpeg-gray": encode(gray, "JPEG"),
        "jpeg-progressive": encode(page, "JPEG", progressive=True), "jpeg-cmyk": encode(page.convert("CMYK"), "JPEG"),
        "gif": encode(page.convert("P"), "GIF"), "bmp": encode(page, "BMP"), "tiff": encode(page, "TIFF"),
        "tiff-lzw": encode(gray, "TIFF", compression="tiff_lzw"), "webp": encode(page, "WEBP"),
        "webp-lossless": encode(rgba, "WEBP", lossless=True),
    }


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


@cache
def png_of_zeros(width, height, bit_depth=1, header_only=False):
    """A PNG of `width` x `height` zeros, really compressed (or only its header): kilobytes on the wire."""
    header = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bit_depth, 0, 0, 0, 0))
    if header_only:
        return header + png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + png_chunk(b"IEND", b"")
    compressor, row = zlib.compressobj(9), b"\0" * (1 + (width * bit_depth + 7) // 8)
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    return header + png_chunk(b"IDAT", data) + png_chunk(b"IEND", b"")


def gif_screen(width, height):
    """A small real GIF whose logical screen claims width x height."""
    data = bytearray(valid_files()["gif"])
    data[6:10] = struct.pack("<HH", width, height)
    return bytes(data)


def webp_canvas(width, height):
    """A VP8X WebP header declaring a width x height canvas, then nothing."""
    vp8x = struct.pack("<I", 0) + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    body = b"WEBP" + b"VP8X" + struct.pack("<I", len(vp8x)) + vp8x
    return b"RIFF" + struct.pack("<I", len(body)) + body


def bmp_header(width, height):
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", min(54 + 3 * width * height, 2**32 - 1), 0, 0, 54) + info + b"\0" * 64


def jpeg_claiming(width, height):
    """A real small JPEG whose frame header (SOF0) claims width x height."""
    data = bytearray(valid_files()["jpeg-gray"])
    at = data.index(b"\xff\xc0") + 5
    data[at:at + 4] = struct.pack(">HH", height, width)
    return bytes(data)


@cache
def tiff_fax(width, height):
    """A bilevel TIFF, CCITT group 4 compressed: a huge white page is a few hundred bytes."""
    return encode(Image.new("1", (width, height), 1), "TIFF", compression="group4")


@cache
def webp_lossless_blank(width, height):
    return encode(Image.new("L", (width, height)), "WEBP", lossless=True)


@cache
def animated_gif(frames):
    rng = np.random.default_rng(frames)
    images = [Image.fromarray(rng.integers(0, 255, (8, 8), np.uint8)) for _ in range(frames)]
    return encode(images[0], "GIF", save_all=True, append_images=images[1:])


def bombs():
    """Every bomb, named; each must be refused in < BOMB_MS."""
    return {
        "png 100000x100000 header": png_of_zeros(100_000, 100_000, 8, header_only=True),
        "png 20000x20000 1-bit zeros": png_of_zeros(20_000, 20_000),
        "png 9000x9000 8-bit zeros": png_of_zeros(9000, 9000, 8),
        "png 6300x6300 8-bit zeros (under the pixel limit)": png_of_zeros(6300, 6300, 8),
        "png 5000x5000 1-bit zeros (under the pixel limit)": png_of_zeros(5000, 5000),
        "png 65535x65535 16-bit header": png_of_zeros(65_535, 65_535, 16, header_only=True),
        "gif screen 65535x65535": gif_screen(65_535, 65_535),
        "gif screen 9000x9000": gif_screen(9000, 9000),
        "webp canvas 16384x16384": webp_canvas(16_384, 16_384),
        "webp lossless 7000x7000 blank": webp_lossless_blank(7000, 7000),
        "webp lossless 3000x3000 blank (under the pixel limit)": webp_lossless_blank(3000, 3000),
        "tiff group4 12000x12000 blank": tiff_fax(12_000, 12_000),
        "tiff group4 5000x5000 blank (under the pixel limit)": tiff_fax(5000, 5000),
        "bmp header 50000x50000": bmp_header(50_000, 50_000),
        "jpeg claiming 65000x65000": jpeg_claiming(65_000, 65_000),
        "jpeg claiming 9000x9000": jpeg_claiming(9000, 9000),
    }


NOT_IMAGES = {
    "svg": b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="9e9" height="9e9"><circle r="4"/></svg>',
    "svg-billion-laughs": b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;'
                          b'&a;&a;&a;">]><svg xmlns="http://www.w3.org/2000/svg"><text>&b;</text></svg>',
    "pdf": b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n",
    "html": b"<!doctype html><html><body><img src=x onerror=alert(1)></body></html>",
    "elf": b"\x7fELF\x02\x01\x01" + b"\0" * 9 + b"\x02\x00\x3e\x00" + bytes(range(256)) * 4,
    "exe": b"MZ\x90\x00\x03" + b"\0" * 55 + b"\x80\0\0\0" + b"PE\0\0" + bytes(range(256)) * 4,
    "json": b'{"image": "not this way"}', "text": b"seven", "gzip": gzip.compress(b"\0" * 100_000),
    "ico": encode(Image.new("RGB", (32, 32)), "ICO"), "psd-magic": b"8BPS\x00\x01" + b"\0" * 200,
    "heic": b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\0" * 100,
}


def zip_of_png():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("digit.png", valid_files()["png-gray"])
    return buffer.getvalue()


# --- the cases -----------------------------------------------------------------------------------------

def multipart(parts, boundary="fuzzboundary"):
    """[(field, filename, content_type, bytes)] -> (body, content type header)."""
    body = b""
    for field, filename, content_type, data in parts:
        disposition = f'form-data; name="{field}"' + (f'; filename="{filename}"' if filename is not None else "")
        body += (f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
                 f"Content-Type: {content_type}\r\n\r\n").encode() + data + b"\r\n"
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def as_upload(rng, data, path=None, content_type="image/png", filename="digit.png"):
    """Send bytes the way some client would: raw body, multipart, or JSON base64 / data URL."""
    path = path or IMAGE_ROUTES[rng.integers(len(IMAGE_ROUTES))]
    if path == "/predict/batch":
        body, header = multipart([("images", filename, content_type, data)] * int(rng.integers(1, 4)))
        return path, {"Content-Type": header}, body
    way = rng.integers(3)
    if way == 0:
        return path, {"Content-Type": content_type}, data
    if way == 1:
        body, header = multipart([("image", filename, content_type, data)])
        return path, {"Content-Type": header}, body
    text = base64.b64encode(data).decode()
    return path, {"Content-Type": "application/json"}, json.dumps({"image": f"data:{content_type};base64,{text}"}).encode()


def random_bytes(rng):
    data = rng.integers(0, 256, int(rng.choice([0, 1, 8, 64, 700, 5000, 40_000])), np.uint8).tobytes()
    content_type = str(rng.choice(["image/png", "image/jpeg", "application/octet-stream", "text/plain", ""]))
    return as_upload(rng, data, content_type=content_type)


def truncated(rng):
    name = str(rng.choice(sorted(valid_files())))
    data = valid_files()[name]
    return as_upload(rng, data[:int(rng.integers(0, len(data)))])


def flipped(rng):
    name = str(rng.choice(sorted(valid_files())))
    data = bytearray(valid_files()[name])
    for at in rng.integers(0, len(data), int(rng.integers(1, 17))):
        data[at] ^= int(rng.integers(1, 256))
    return as_upload(rng, bytes(data))


def tiny(rng):
    fmt = str(rng.choice(["PNG", "GIF", "BMP", "TIFF", "WEBP", "JPEG"]))
    size = [(1, 1), (1, int(rng.integers(2, 3000))), (int(rng.integers(2, 3000)), 1), (2, 2)][rng.integers(4)]
    data = encode(Image.new("L", size, int(rng.integers(256))), fmt)
    if rng.random() < 0.3:  # the same file with a 0 width or height written into its header
        data = png_of_zeros(0, int(rng.integers(0, 50)), 8) if rng.random() < 0.5 else bmp_header(0, 5)
    return as_upload(rng, data)


def animated(rng):
    return as_upload(rng, animated_gif(int(rng.choice([2, 500, 3000]))), content_type="image/gif")


def disguised(rng):
    data = zip_of_png() if rng.random() < 0.1 else NOT_IMAGES[str(rng.choice(sorted(NOT_IMAGES)))]
    return as_upload(rng, data, content_type="image/png", filename="digit.png")


def content_types(rng):
    data = valid_files()[str(rng.choice(["png-gray", "jpeg", "webp"]))]
    content_type = str(rng.choice(["text/plain", "application/json", "application/x-www-form-urlencoded",
                                   "multipart/form-data", "image/jpeg", "image/png; charset=utf-8",
                                   "image/svg+xml", "video/mp4", "\x01\x02", "image/"]))
    path = IMAGE_ROUTES[rng.integers(len(IMAGE_ROUTES))]
    return path, ({"Content-Type": content_type} if rng.random() < 0.8 else {}), data


def forms(rng):
    png = valid_files()["png-gray"]
    kind = rng.integers(9)
    path = str(rng.choice(IMAGE_ROUTES))
    if kind == 0:  # a form with too many files: over MAX_BATCH_IMAGES, or over werkzeug's part limit
        count = int(rng.choice([65, 200, 1500]))
        body, header = multipart([("images", f"{i}.png", "image/png", b"x") for i in range(count)])
        return "/predict/batch", {"Content-Type": header}, body
    if kind == 1:  # an empty form
        body, header = multipart([])
        return path, {"Content-Type": header}, body
    if kind == 2:  # the boundary in the header is not the one in the body
        body, _ = multipart([("image", "a.png", "image/png", png)])
        return path, {"Content-Type": "multipart/form-data; boundary=other"}, body
    if kind == 3:  # cut off mid-part
        body, header = multipart([("image", "a.png", "image/png", png)])
        return path, {"Content-Type": header}, body[:int(rng.integers(10, len(body)))]
    if kind == 4:  # the wrong field names, an empty file, a path-like filename, a text field
        body, header = multipart([("picture", "../../etc/passwd", "image/png", png), ("image", "", "image/png", b""),
                                  ("note", None, "text/plain", b"hello")][:int(rng.integers(1, 4))])
        return path, {"Content-Type": header}, body
    if kind == 5:  # no boundary at all
        return path, {"Content-Type": "multipart/form-data"}, png
    if kind == 6:  # a part header longer than any sane client sends
        body, header = multipart([("image" + "x" * 70_000, "a.png", "image/png", png)])
        return path, {"Content-Type": header}, body
    if kind == 7:  # a body over MAX_UPLOAD_BYTES (10 MB): its length says so, the server must not wait for it
        body, header = multipart([("image", "a.png", "image/png", png)])
        return path, {"Content-Type": header, "Content-Length": str(10_500_000 + len(body))}, body
    data = rng.integers(0, 256, 3000, np.uint8).tobytes()  # random bytes where the parts should be
    return path, {"Content-Type": "multipart/form-data; boundary=fuzzboundary"}, b"--fuzzboundary\r\n" + data


def json_bodies(rng):
    png = base64.b64encode(valid_files()["png-gray"]).decode()
    path = str(rng.choice(["/predict", "/read"]))
    bodies = [
        {"image": png[:int(rng.integers(1, len(png)))]},  # cut short
        {"image": png.replace("A", "!", 3)}, {"image": "data:image/png;base64," + png[:-3]},
        {"image": "data:image/png;base64"}, {"image": "data:,"}, {"image": "data:text/html,<b>7</b>"},
        {"image": png[:40] + "\n" + png[40:]},  # MIME-style line breaks
        {"image": None}, {"image": 7}, {"image": [png]}, {"image": {"data": png}}, {}, [png], png, 7, None,
        {"image": base64.b64encode(rng.integers(0, 256, 2000, np.uint8).tobytes()).decode()},
    ]
    pick = int(rng.integers(len(bodies) + 4))
    if pick < len(bodies):
        return path, {"Content-Type": "application/json"}, json.dumps(bodies[pick]).encode()
    depth = int(rng.choice([100, 5000, 200_000]))
    raw = [b"[" * depth + b"]" * depth, b'{"image":' * depth + b"1" + b"}" * depth,  # deep JSON
           b'{"image": "\xff\xfe\xfd"}', b"{" + rng.integers(0, 256, 500, np.uint8).tobytes()][pick - len(bodies)]
    return path, {"Content-Type": "application/json"}, raw


def long_requests(rng):
    kind = rng.integers(4)
    if kind == 0:  # a URL over gunicorn's request line limit (8190)
        return "/predict?" + "a" * int(rng.choice([9000, 60_000])), {}, b""
    if kind == 1:  # a long URL the app does see
        return "/" + "x" * 4000, {}, b""
    if kind == 2:  # one huge header
        return "/predict", {"Content-Type": "image/png", "X-Fuzz": "v" * int(rng.choice([9000, 100_000]))}, b"\0"
    return "/predict", {"Content-Type": "image/png", **{f"X-F{i}": "v" for i in range(150)}}, b"\0"  # many


def methods(rng):
    method = str(rng.choice(["GET", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"]))
    return method, str(rng.choice(IMAGE_ROUTES + ("/", "/health", "/nowhere", "/static/../serve/app.py"))), {}, b""


FAMILIES = {  # name -> (generator, share of the cases)
    "random bytes": (random_bytes, 0.14), "truncated files": (truncated, 0.20), "flipped bytes": (flipped, 0.20),
    "tiny and 0-size": (tiny, 0.06), "animated gifs": (animated, 0.01), "not images": (disguised, 0.08),
    "content types": (content_types, 0.08), "multipart forms": (forms, 0.08), "json bodies": (json_bodies, 0.10),
    "long urls and headers": (long_requests, 0.02), "methods": (methods, 0.03),
}


def cases(n, seed=0):
    """n cases, the same ones for the same (n, seed)."""
    rng = np.random.default_rng(seed)
    names = list(FAMILIES)
    shares = np.array([FAMILIES[name][1] for name in names])
    out = []
    for family in rng.choice(names, n, p=shares / shares.sum()):
        made = FAMILIES[family][0](rng)
        method, (path, headers, body) = ("POST", made) if len(made) == 3 else (made[0], made[1:])
        out.append(Case(str(family), method, path, headers, body))
    return out


def bomb_cases():
    rng = np.random.default_rng(0)
    out = []
    for name, data in bombs().items():
        for path in IMAGE_ROUTES:
            out.append(Case(f"bomb: {name}", "POST", *as_upload(rng, data, path=path)))
    return out
