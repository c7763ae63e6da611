"""Small but real files of common formats, made with the standard library.

The content-check tests use them as the set a detector must get right: each
is a complete, valid file of its format (a viewer opens it), not just the
first magic bytes.
"""
from __future__ import annotations

import gzip
import io
import struct
import tarfile
import wave
import zipfile
import zlib


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png(width: int = 4, height: int = 4) -> bytes:
    """A valid RGB PNG (a red square)."""
    raw = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + _png_chunk(b"IDAT", zlib.compress(raw)) + _png_chunk(b"IEND", b""))


def gif() -> bytes:
    """A valid 1x1 GIF89a."""
    return (b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\x00\x00\x00\x00\x00"
            b"!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;")


def jpeg() -> bytes:
    """A valid 1x1 baseline JPEG (JFIF), as encoders write it."""
    return bytes.fromhex(
        "ffd8ffe000104a46494600010100000100010000ffdb004300080606070605080707070909080a0c140d0c0b0b0c19"
        "12130f141d1a1f1e1d1a1c1c20242e2720222c231c1c2837292c30313434341f27393d38323c2e333432ffc0000b08"
        "0001000101011100ffc4001f0000010501010101010100000000000000000102030405060708090a0bffc400b51000"
        "02010303020403050504040000017d01020300041105122131410613516107227114328191a1082342b1c11552d1f0"
        "2433627282090a161718191a25262728292a3435363738393a434445464748494a535455565758595a636465666768"
        "696a737475767778797a838485868788898a92939495969798999aa2a3a4a5a6a7a8a9aab2b3b4b5b6b7b8b9bac2c3"
        "c4c5c6c7c8c9cad2d3d4d5d6d7d8d9dae1e2e3e4e5e6e7e8e9eaf1f2f3f4f5f6f7f8f9faffda0008010100003f00fb"
        "d3ffd9")


def bmp() -> bytes:
    """A valid 1x1 24-bit BMP."""
    pixels = b"\x00\x00\xff\x00"  # one BGR pixel, row padded to 4 bytes
    header = struct.pack("<IiiHHIIiiII", 40, 1, 1, 1, 24, 0, len(pixels), 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + len(header) + len(pixels), 0, 0, 14 + len(header)) + header + pixels


def webp() -> bytes:
    """A valid 1x1 lossless WebP."""
    payload = bytes.fromhex("2f000000100700100000000000")
    chunk = b"VP8L" + struct.pack("<I", len(payload)) + payload + (b"\x00" if len(payload) % 2 else b"")
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


def pdf() -> bytes:
    """A valid one-page PDF with its cross-reference table."""
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
               b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] >>"]
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, obj in enumerate(objects, 1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % number + obj + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for offset in offsets:
        out.write(b"%010d 00000 n \n" % offset)
    out.write(b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref))
    return out.getvalue()


def zip_archive() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("hello.txt", "hello " * 100)
    return out.getvalue()


def docx() -> bytes:
    """A minimal Office Open XML document (what libmagic looks for comes first)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("[Content_Types].xml", '<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/'
                   'package/2006/content-types"><Override PartName="/word/document.xml" ContentType="application/'
                   'vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/></Types>')
        z.writestr("_rels/.rels", "<Relationships/>")
        z.writestr("word/document.xml", "<w:document/>")
    return out.getvalue()


def gz() -> bytes:
    return gzip.compress(b"hello world\n" * 50, mtime=0)


def tar() -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as t:
        data = b"hello\n"
        info = tarfile.TarInfo("hello.txt")
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    return out.getvalue()


def wav() -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x00\x00" * 800)
    return out.getvalue()


#: Text files: no magic bytes, checked as text.
TEXT = "Grüße, 你好 — plain UTF-8 text.\nSecond line\twith a tab.\n".encode()
CSV = b"name,size\r\na.png,10\r\nb.txt,20\r\n"
JSON = b'{"files": [1, 2, 3], "ok": true}\n'
HTML = b"<!DOCTYPE html>\n<html><head><title>t</title></head><body><p>hi</p></body></html>\n"
SVG = (b'<?xml version="1.0" encoding="UTF-8"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
       b'<rect width="10" height="10" fill="red"/></svg>\n')
XML = b'<?xml version="1.0" encoding="UTF-8"?>\n<note><to>you</to></note>\n'
UTF16_TEXT = "\ufeffUTF-16 text with a BOM\n".encode("utf-16-le")

#: file name -> content: every one must pass the content check under its own name.
GOOD: dict[str, bytes] = {
    "image.png": png(),
    "photo.jpg": jpeg(),
    "photo.jpeg": jpeg(),
    "anim.gif": gif(),
    "pic.bmp": bmp(),
    "pic.webp": webp(),
    "doc.pdf": pdf(),
    "files.zip": zip_archive(),
    "letter.docx": docx(),
    "plain-zip.docx": zip_archive(),  # libmagic names an office file plain ZIP when its first entry differs
    "log.gz": gz(),
    "bundle.tgz": gz(),
    "bundle.tar": tar(),
    "sound.wav": wav(),
    "notes.txt": TEXT,
    "readme.md": TEXT,
    "wide.txt": UTF16_TEXT,
    "empty.txt": b"",
    "table.csv": CSV,
    "latin1.csv": "café;crème\r\n".encode("cp1252"),
    "data.json": JSON,
    "page.html": HTML,
    "drawing.svg": SVG,
    "note.xml": XML,
}

#: file name -> content that is NOT what the name says: each must be refused.
BAD: dict[str, bytes] = {
    "html-as.png": HTML,
    "script-as.jpg": b"<?php system($_GET['c']); ?>\n",
    "gif-as.png": gif(),
    "png-as.jpg": png(),
    "pdf-as.gif": pdf(),
    "zip-as.pdf": zip_archive(),
    "elf-as.png": b"\x7fELF\x02\x01\x01" + b"\x00" * 57,
    "empty.png": b"",
    "text-as.pdf": TEXT,
    "exe-as.zip": b"MZ\x90\x00" + b"\x00" * 60 + b"PE\x00\x00" + b"\x00" * 60,
    "page.docx": HTML,
    "text.gz": TEXT,
    "binary.txt": b"\x00\x01\x02\x03 binary \xff\xfe\x00",
    "gif-polyglot.txt": gif(),
    "pdf.txt": pdf(),
    "bad-utf16.txt": b"\xff\xfe" + b"\x00\xd8" + b"a\x00",  # a lone surrogate after the BOM
    "png.md": png(),
    "png.csv": png(),
    "zip.json": zip_archive(),
    "nul.html": b"<html>\x00</html>",
    "html-as.svg": HTML,
}
