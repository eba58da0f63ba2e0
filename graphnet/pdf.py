"""A small PDF typesetter for reports: markdown blocks on A4 pages.

Only what the report writes is understood: ``#`` and ``##`` headings,
paragraphs, ``- `` items, pipe tables and figures with captions. Text
is drawn with matplotlib and laid out by measured width; a table that
does not fit the page is split, its header repeated.
"""

import io
import re
from functools import lru_cache

from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.font_manager import FontProperties
from matplotlib.lines import Line2D
from matplotlib.textpath import TextToPath
from matplotlib.transforms import Affine2D

from .plots import plt

# A4 in points, and the text area inside the margins
PAGE_W, PAGE_H = 595.3, 841.9
LEFT, RIGHT, TOP, BOTTOM = 62.0, 62.0, 60.0, 62.0
TEXT_W = PAGE_W - LEFT - RIGHT
BODY = 9.5
NUMERIC = re.compile(r"^[-+]?[\d.]+(e[-+]?\d+)?%?$|^-$")
_PATHS = TextToPath()


def plain(text):
    """Inline markdown without its marks: bold, italics, code."""
    text = re.sub(r"\*\*(.+?)\*\*", r"\1", text)
    return text.replace("`", "")


@lru_cache(maxsize=20000)
def width(text, size, bold=False):
    """Width of ``text`` in points."""
    prop = FontProperties(size=size, weight="bold" if bold else "normal")
    return _PATHS.get_text_width_height_descent(text, prop, ismath=False)[0]


def wrap(text, size, limit, bold=False):
    """Split ``text`` into lines no wider than ``limit`` points."""
    lines, line = [], ""
    for word in text.split():
        trial = f"{line} {word}" if line else word
        if line and width(trial, size, bold) > limit:
            lines.append(line)
            trial = word
        line = trial
    return lines + [line] if line else lines


def shorten(text, size, limit):
    """Fit ``text`` into ``limit`` points, dropping leading folders first."""
    if width(text, size) <= limit:
        return text
    parts = text.split("/")
    for i in range(1, len(parts)):
        short = "\u2026/" + "/".join(parts[i:])
        if width(short, size) <= limit:
            return short
    while len(text) > 2 and width(text + "\u2026", size) > limit:
        text = text[:-1]
    return text + "\u2026"


def parse(md):
    """Markdown text as a list of (kind, payload) items."""
    items, lines, i = [], md.splitlines(), 0
    while i < len(lines):
        line = lines[i].strip()
        if line.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].strip().startswith("|"):
                cells = [plain(c.strip())
                         for c in lines[i].strip().strip("|").split("|")]
                if not all(set(c) <= set("-: ") for c in cells):
                    rows.append(cells)  # the |---| line is dropped
                i += 1
            items.append(("table", rows))
            continue
        if line.startswith("## "):
            items.append(("h2", plain(line[3:])))
        elif line.startswith("# "):
            items.append(("h1", plain(line[2:])))
        elif line.startswith("- "):
            items.append(("item", plain(line[2:])))
        elif line:
            para = [line]
            while i + 1 < len(lines) and lines[i + 1].strip() and not \
                    re.match(r"\s*(#|\||- )", lines[i + 1]):
                i += 1
                para.append(lines[i].strip())
            items.append(("para", plain(" ".join(para))))
        i += 1
    return items


class Document:
    """Pages being filled from the top; ``y`` is the next free baseline."""

    def __init__(self, path, title):
        self.pdf = PdfPages(path)
        info = self.pdf.infodict()
        info["Title"], info["Creator"] = title, "graphnet report"
        self.fig, self.number, self.y = None, 0, 0.0

    def page(self):
        """Finish the current page and open a new one."""
        self.finish()
        self.fig = plt.figure(figsize=(PAGE_W / 72, PAGE_H / 72))
        self.points = Affine2D().scale(1 / 72) + self.fig.dpi_scale_trans
        self.number += 1
        self.y = PAGE_H - TOP

    def finish(self):
        if self.fig is not None:
            self.text(PAGE_W / 2, BOTTOM / 2, str(self.number), 8,
                      ha="center", color="0.4")
            self.pdf.savefig(self.fig)
            plt.close(self.fig)
            self.fig = None

    def close(self):
        self.finish()
        self.pdf.close()

    def need(self, height):
        """Start a new page unless ``height`` points fit below ``y``."""
        if self.fig is None or self.y - height < BOTTOM:
            self.page()

    def text(self, x, y, s, size, **kw):
        self.fig.text(x, y, s, fontsize=size, transform=self.points,
                      parse_math=False, **kw)

    def rule(self, x0, x1, y, lw=0.6):
        self.fig.add_artist(Line2D([x0, x1], [y, y], lw=lw, color="k",
                                   transform=self.points))

    def lines(self, lines, size, x=LEFT, lead=1.35, **kw):
        for line in lines:
            self.need(size * lead)
            self.y -= size * lead
            self.text(x, self.y + size * 0.25, line, size, **kw)

    # ---- blocks ----------------------------------------------------------

    def markdown(self, md):
        for kind, value in parse(md):
            if kind == "h1":
                self.need(60)
                self.lines(wrap(value, 17, TEXT_W, True), 17,
                           weight="bold")
                self.y -= 6
                self.rule(LEFT, PAGE_W - RIGHT, self.y, lw=1.0)
                self.y -= 8
            elif kind == "h2":
                self.y -= 10
                self.need(90)  # keep a heading with what follows
                self.lines(wrap(value, 13, TEXT_W, True), 13,
                           weight="bold")
                self.y -= 4
            elif kind == "item":
                self.need(BODY * 1.35)
                self.text(LEFT + 4, self.y - BODY * 1.1, "\u2022", BODY)
                self.lines(wrap(value, BODY, TEXT_W - 14), BODY,
                           x=LEFT + 14)
                self.y -= 3
            elif kind == "para":
                lines = wrap(value, BODY, TEXT_W)
                self.need(min(len(lines), 2) * BODY * 1.35)  # no lone line
                self.lines(lines, BODY)
                self.y -= 6
            else:
                self.table(value)
                self.y -= 8

    def table(self, rows):
        """Columns with rules; shrink the font, then shorten long cells."""
        header, body = rows[0], rows[1:]
        ncol, pad = len(header), 10.0
        size = 8.0

        def widths(size):
            return [max(width(r[c] if c < len(r) else "", size, i == 0)
                        for i, r in enumerate(rows)) + pad
                    for c in range(ncol)]

        while sum(widths(size)) > TEXT_W and size > 6.5:
            size -= 0.5
        cols = widths(size)
        while sum(cols) > TEXT_W:  # the widest column gives way
            c = max(range(ncol), key=cols.__getitem__)
            cols[c] = max(cols[c] - (sum(cols) - TEXT_W),
                          width(header[c], size, True) + pad)
            body = [[shorten(v, size, cols[c] - pad) if j == c else v
                     for j, v in enumerate(r)] for r in body]
            if sum(cols) > TEXT_W:
                break
        right = [all(NUMERIC.match(r[c]) for r in body if c < len(r))
                 and body for c in range(ncol)]
        lead = size * 1.55

        def row(cells, bold):
            self.y -= lead
            x = LEFT
            for c, w in enumerate(cols):
                cell = cells[c] if c < len(cells) else ""
                at = x + w - pad / 2 if right[c] else x + pad / 2
                if bold and right[c] and width(cell, size, True) > w - pad:
                    at = x + pad / 2  # a header wider than its numbers
                self.text(at, self.y + size * 0.45, cell, size,
                          ha="right" if right[c] and at > x + pad else "left",
                          weight="bold" if bold else "normal")
                x += w

        def head():
            self.need(3 * lead)
            self.rule(LEFT, LEFT + sum(cols), self.y, lw=1.0)
            row(header, True)
            self.rule(LEFT, LEFT + sum(cols), self.y)

        head()
        for cells in body:
            if self.y - lead < BOTTOM:
                self.rule(LEFT, LEFT + sum(cols), self.y, lw=1.0)
                self.page()
                head()
            row(cells, False)
        self.rule(LEFT, LEFT + sum(cols), self.y, lw=1.0)

    def figure(self, fig, caption, dpi=200):
        """A matplotlib figure as an image the width of the text."""
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi)
        buf.seek(0)
        image = plt.imread(buf)
        caption = wrap(caption, 8.5, TEXT_W)
        w = TEXT_W
        h = w * image.shape[0] / image.shape[1]
        room = 0.42 * (PAGE_H - TOP - BOTTOM)  # a squarish plot stays small
        if h > room:
            w, h = w * room / h, room
        self.need(h + 12 * len(caption) + 10)
        self.y -= h + 4
        x = LEFT + (TEXT_W - w) / 2
        ax = self.fig.add_axes([x / PAGE_W, self.y / PAGE_H, w / PAGE_W,
                                h / PAGE_H])
        ax.imshow(image, interpolation="antialiased")
        ax.set_axis_off()
        self.lines(caption, 8.5, lead=1.4, style="italic")
        self.y -= 10


def write_pdf(blocks, path, title):
    """Typeset report blocks into an A4 PDF at ``path``.

    Parameters
    ----------
    blocks : list of tuple
        ``("md", text)`` or ``("fig", name, figure, caption)``.
    path : str or Path
    title : str
        The document title in the PDF's metadata.
    """
    doc = Document(path, title)
    try:
        for block in blocks:
            if block[0] == "md":
                doc.markdown(block[1])
            else:
                doc.figure(block[2], block[3])
    finally:
        doc.close()
