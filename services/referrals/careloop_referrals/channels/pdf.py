"""A plain-text report as a PDF a fax provider can rasterise: US Letter pages, Helvetica
(one of the 14 fonts every PDF reader has, so nothing is embedded), the text wrapped and
paginated. The lock has no PDF library and a text page needs none.

The output depends on the text only (no dates, no random ids), so a retried fax sends
the same bytes.
"""

from __future__ import annotations

import textwrap

PAGE_WIDTH, PAGE_HEIGHT = 612, 792  # US Letter in points
MARGIN = 72
FONT_SIZE = 11
LEADING = 14
# Helvetica's average glyph is about half an em wide: 85 characters fill the text width.
WRAP = 85
LINES_PER_PAGE = (PAGE_HEIGHT - 2 * MARGIN) // LEADING


def _literal(line: str) -> bytes:
    # WinAnsiEncoding is cp1252; what it lacks shows as "?" rather than failing the fax.
    raw = line.encode("cp1252", errors="replace")
    out = bytearray(b"(")
    for byte in raw:
        if byte in b"()\\":
            out += b"\\" + bytes([byte])
        elif byte < 0x20 or byte > 0x7E:
            out += b"\\%03o" % byte
        else:
            out.append(byte)
    out += b")"
    return bytes(out)


def wrapped(text: str) -> list[str]:
    """The text's lines wrapped to the page width; blank lines kept."""
    lines: list[str] = []
    for paragraph in text.splitlines():
        lines.extend(textwrap.wrap(paragraph, WRAP, break_long_words=True) or [""])
    return lines


def text_pdf(text: str) -> bytes:
    """`text` as a PDF 1.4 document of as many pages as it needs."""
    lines = wrapped(text) or [""]
    pages = [lines[i : i + LINES_PER_PAGE] for i in range(0, len(lines), LINES_PER_PAGE)]
    # Objects: 1 catalog, 2 page tree, 3 font, then a page and its content stream per page.
    objects: list[bytes] = []
    kids = " ".join(f"{4 + 2 * i} 0 R" for i in range(len(pages)))
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {len(pages)} >>".encode())
    objects.append(
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>"
    )
    for index, page in enumerate(pages):
        content = bytearray(
            b"BT\n/F1 %d Tf\n%d TL\n%d %d Td\n"
            % (FONT_SIZE, LEADING, MARGIN, PAGE_HEIGHT - MARGIN - FONT_SIZE)
        )
        for number, line in enumerate(page):
            content += _literal(line) + (b" Tj\n" if number == 0 else b" '\n")
        content += b"ET\n"
        objects.append(
            (
                f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {PAGE_WIDTH} {PAGE_HEIGHT}] "
                f"/Resources << /Font << /F1 3 0 R >> >> /Contents {5 + 2 * index} 0 R >>"
            ).encode()
        )
        objects.append(b"<< /Length %d >>\nstream\n" % len(content) + content + b"endstream")
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)
