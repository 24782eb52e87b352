"""The report as a reader gets it: the HTML laid out by headless Chromium at A4 and at screen
width, and every page of the PDF rendered to pixels and read back.

Each PDF page must show something, keep everything inside the page's width (the right margin stays
white, every character and image lies inside the page), repeat the vertebra table's header on
every page the table runs over, and print its text and figures at a readable size. The checks
are made on pixels and on the PDF's own text and image objects (pypdfium2), so that they see what
a printer would print.

Needs Chromium (skipped with the reason where it is absent) and pypdfium2 (the ``test`` extra).
"""

from __future__ import annotations

import ctypes
import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from vertgrade import grade_study
from vertgrade.io.load import study_from_arrays
from vertgrade.phantom import make_phantom
from vertgrade.report.figures import FIGURE_MIN_FONT_PT
from vertgrade.report.html import REPORT_HTML, render_report, save_report
from vertgrade.report.pdf import REPORT_PDF, find_browser
from vertgrade.result import SpineResult
from vertgrade.study import Study

pdfium = pytest.importorskip("pypdfium2", reason="pypdfium2 renders the PDF (the test extra)")
pdfium_c = pytest.importorskip("pypdfium2.raw")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        find_browser() is None,
        reason="headless Chromium not installed (Debian/Ubuntu: apt-get install chromium)",
    ),
]

# A4 in PDF points, the page margin of the report's style sheet (12 mm), and how far beyond the
# content box ink may reach before it counts as running into the margin (anti-aliasing, borders).
A4_PT = (595.28, 841.89)
MARGIN_PT = 12.0 / 25.4 * 72.0
SLACK_PT = 1.5
# Chromium prints a CSS pixel as 0.75 pt (96 px per inch); a page whose content is wider than the
# paper is shrunk to fit, every CSS pixel then smaller.
PT_PER_CSS_PX = 0.75
# Readable on paper: the smallest text of the page and of the figures (points).
MIN_TEXT_PT = 6.5
MIN_FIGURE_TEXT_PT = 7.0
# Pixels per point of the page renders (2: 144 dpi).
RENDER_SCALE = 2.0
# Header cells of the vertebra table, as they print (one cell's text, unbroken).
TABLE_HEADER_CELL = "confidence"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


# --- a phantom with fractures and a vertebra cut by the field of view -----------------------


@pytest.fixture(scope="module")
def graded() -> tuple[SpineResult, Study]:
    ph = make_phantom(
        "T10-L3",
        ("L1:wedge:0.35", "T12:biconcave:0.3"),
        spacing=(1.0, 1.0, 1.5),
        fov_mm=(140.0, 140.0),
        scoliosis="T5-T11:right:30,T11-L4:left:25",
        seed=5,
    )
    # cut the image through L3's body (axis 2 runs inferior -> superior): L3 is not gradable
    l3 = next(t for t in ph.truth if t.level == "L3")
    k = round(float((np.linalg.inv(ph.affine) @ [0, 0, l3.centre_z_mm, 1.0])[2]))
    shift = np.eye(4)
    shift[2, 3] = k
    study = study_from_arrays(
        ph.labels[:, :, k:], ph.affine @ shift, ct=ph.ct[:, :, k:], subject="print-phantom"
    )
    result = grade_study(study)
    assert result["L3"].status == "not_gradable" and result["L1"].grade == 2
    return result, study


@pytest.fixture(scope="module")
def report(graded: tuple[SpineResult, Study], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("printed")
    save_report(render_report(*graded), out, pdf=True)
    return out


# --- reading a PDF back ---------------------------------------------------------------------


@dataclass
class Page:
    """One PDF page as pixels and as the PDF's own objects (coordinates in points, origin at
    the bottom left as PDF has it)."""

    number: int
    size_pt: tuple[float, float]
    rgb: np.ndarray
    text: str
    char_boxes: np.ndarray  # (N, 4) left, bottom, right, top
    font_sizes_pt: np.ndarray  # (N,) as printed: the font's size times its matrix's scale
    char_scales: np.ndarray  # (N,) the scale of each character's matrix: points per CSS pixel
    images: list[tuple[tuple[float, float, float, float], tuple[int, int]]]  # bounds, px size

    def find(self, needle: str) -> list[float]:
        """Top (points from the page's top) of each occurrence of ``needle``."""
        tops = []
        start = 0
        while (i := self.text.find(needle, start)) >= 0:
            tops.append(self.size_pt[1] - float(self.char_boxes[i, 3]))
            start = i + 1
        return tops


def read_pdf(path: Path) -> list[Page]:
    pdf = pdfium.PdfDocument(str(path))
    pages = []
    try:
        for n in range(len(pdf)):
            page = pdf[n]
            size = page.get_size()
            rgb = np.asarray(page.render(scale=RENDER_SCALE).to_numpy())[..., :3].copy()
            textpage = page.get_textpage()
            count = textpage.count_chars()
            text = "".join(chr(pdfium_c.FPDFText_GetUnicode(textpage.raw, i)) for i in range(count))
            boxes = np.array(
                [textpage.get_charbox(i) for i in range(count)], dtype=np.float64
            ).reshape(-1, 4)
            # Chromium writes text at its CSS pixel size, scaled to points by the text matrix
            scales = np.ones(count)
            matrix = pdfium_c.FS_MATRIX()
            for i in range(count):
                if pdfium_c.FPDFText_GetMatrix(textpage.raw, i, ctypes.byref(matrix)):
                    scales[i] = np.sqrt(abs(matrix.a * matrix.d - matrix.b * matrix.c))
            fonts = scales * np.array(
                [pdfium_c.FPDFText_GetFontSize(textpage.raw, i) for i in range(count)],
                dtype=np.float64,
            )
            images = [
                (tuple(obj.get_bounds()), tuple(obj.get_px_size()))
                for obj in page.get_objects(filter=(pdfium_c.FPDF_PAGEOBJ_IMAGE,), max_depth=4)
            ]
            pages.append(Page(n + 1, size, rgb, text, boxes, fonts, scales, images))
    finally:
        pdf.close()
    return pages


def page_problems(page: Page) -> list[str]:
    """What is wrong with one page: blank, ink or text or images beyond the content's width,
    text or figures too small to read."""
    problems = []
    width, height = page.size_pt
    if abs(width - A4_PT[0]) > 2 or abs(height - A4_PT[1]) > 2:
        problems.append(f"not A4: {width:.0f} x {height:.0f} pt")
    ink = np.any(page.rgb < 235, axis=-1)
    if ink.mean() < 0.005:
        problems.append(f"blank ({100 * ink.mean():.2f} % ink)")
    right = int(np.ceil((width - MARGIN_PT + SLACK_PT) * RENDER_SCALE))
    if ink[:, right:].any():
        cols = np.nonzero(ink[:, right:].any(axis=0))[0]
        problems.append(
            f"ink in the right margin, {cols.max() / RENDER_SCALE + SLACK_PT:.1f} pt beyond "
            "the content's width"
        )
    visible = np.array([not ch.isspace() for ch in page.text], dtype=bool)
    # content wider than the paper is not cut but shrunk, the whole page: every character then
    # prints at less than 0.75 pt per CSS pixel
    if visible.any():
        scale = float(np.median(page.char_scales[visible]))
        if scale < PT_PER_CSS_PX - 0.005:
            problems.append(
                f"shrunk to fit the paper (to {scale / PT_PER_CSS_PX:.0%}): something is wider "
                "than the page"
            )
    boxes = page.char_boxes[visible]
    if boxes.size and (boxes[:, 2].max() > width - MARGIN_PT + SLACK_PT or boxes[:, 0].min() < 0):
        where = int(np.argmax(boxes[:, 2]))
        problems.append(f"text beyond the content's width at x = {boxes[where, 2]:.1f} pt")
    small = page.font_sizes_pt[visible]
    small = small[small > 0]
    if small.size and small.min() < MIN_TEXT_PT:
        problems.append(f"text printed at {small.min():.1f} pt (< {MIN_TEXT_PT} pt)")
    for (left, _bottom, right_pt, _top), (px_w, _px_h) in page.images:
        if right_pt > width - MARGIN_PT + SLACK_PT or left < MARGIN_PT - SLACK_PT:
            problems.append(f"image beyond the content's width ({left:.0f}-{right_pt:.0f} pt)")
        # the figures are drawn at 100 dpi: a figure point is 100 / 72 pixels
        printed_pt_per_figure_pt = (right_pt - left) / (px_w * 72.0 / 100.0)
        smallest = FIGURE_MIN_FONT_PT * printed_pt_per_figure_pt
        if px_w > 200 and smallest < MIN_FIGURE_TEXT_PT:
            problems.append(
                f"figure ({px_w} px wide) printed at {printed_pt_per_figure_pt:.2f} of its size: "
                f"its smallest text is {smallest:.1f} pt (< {MIN_FIGURE_TEXT_PT} pt)"
            )
    return problems


def table_header_problems(pages: list[Page]) -> tuple[list[str], int]:
    """Whether every page the vertebra table runs over holds its header above its rows; and over
    how many pages it runs.

    The table starts at the first header and ends where the next heading after it ("QC flags
    raised in this study", else "Spine overview") is: every page between, and that heading's
    page when anything stands above the heading, holds table rows, so must hold the header
    above them.
    """
    start = next((p for p in pages if p.find(TABLE_HEADER_CELL)), None)
    if start is None:
        return ["the vertebra table's header is on no page"], 0
    header_top = start.find(TABLE_HEADER_CELL)[0]
    end: tuple[int, float] | None = None
    for marker in ("QC flags raised", "Spine overview"):
        for page in pages[start.number - 1 :]:
            tops = [t for t in page.find(marker) if page is not start or t > header_top]
            if tops:
                end = (page.number, tops[0])
                break
        if end is not None:
            break
    if end is None:
        return ["nothing follows the vertebra table"], 0
    problems = []
    spanned = 1
    for page in pages[start.number : end[0]]:
        top_of_text = page.size_pt[1] - float(page.char_boxes[:, 3].max())
        ends_here = page.number == end[0]
        if ends_here and end[1] <= top_of_text + 2.0:
            break  # the next section starts the page: the table ended on the page before
        spanned += 1
        headers = page.find(TABLE_HEADER_CELL)
        if not headers or (ends_here and headers[0] > end[1]):
            problems.append(f"page {page.number} continues the table without its header")
    return problems, spanned


# --- the PDF --------------------------------------------------------------------------------


def test_every_pdf_page_is_readable_and_inside_the_page(
    report: Path, tmp_path: Path, graded: tuple[SpineResult, Study]
) -> None:
    pages = read_pdf(report / REPORT_PDF)
    assert len(pages) >= 4
    for page in pages:
        assert page_problems(page) == [], f"page {page.number}"
    # every page as a PNG, for a person to look at (kept with the test's files)
    from matplotlib import image as mpimg

    for page in pages:
        mpimg.imsave(tmp_path / f"page-{page.number:02d}.png", page.rgb)
    text = "".join(p.text for p in pages)
    # what the report promises is there: the impression, the alignment, every vertebra; the
    # not-gradable vertebra's reason, not its numbers
    result = graded[0]
    assert "moderate wedge fracture of L1" in text and "cut by the field of view" in text
    assert "Cobb" in text and "kyphosis" in text and "lordosis" in text
    for v in result.vertebrae:
        assert f"{v.level} · " in text.replace("\r\n", " ").replace("\n", " ")
    # the parameters: an appendix, not pages of JSON
    assert '"thresholds"' not in text
    assert "differ from the defaults" in text or "Every other parameter" in text
    appendix = [p for p in pages if p.find("Appendix: provenance")]
    assert len(appendix) == 1 and appendix[0].number >= len(pages) - 1


def test_the_checks_see_what_runs_off_the_page(report: Path, tmp_path: Path) -> None:
    """The page checks find an element wider than the page and text too small to read."""
    html = (report / REPORT_HTML).read_text(encoding="utf-8")
    bad = html.replace(
        '<h2 id="table">',
        '<div style="width: 260mm; height: 6mm; background: #000"></div>'
        '<p style="font-size: 6px">tiny</p><h2 id="table">',
        1,
    )
    save_report(bad, tmp_path, pdf=True)
    problems = [q for p in read_pdf(tmp_path / REPORT_PDF) for q in page_problems(p)]
    assert any("shrunk to fit" in q for q in problems), problems
    assert any(re.match(r"text printed at [34]\.\d pt", q) for q in problems), problems


@pytest.mark.parametrize("pushed_down_mm", [0, 40, 80])
def test_table_header_repeats_on_every_page(
    report: Path, tmp_path: Path, pushed_down_mm: int
) -> None:
    """A vertebra table too long for one page (the phantom's rows four times over: 24 rows, a
    whole spine's) repeats its header at the top of each page it continues on, wherever on
    the first page it starts."""
    html = (report / REPORT_HTML).read_text(encoding="utf-8")
    body = re.search(r'<table id="vertebrae">.*?<tbody>(.*?)</tbody>', html, re.S)
    assert body is not None
    long = html[: body.start(1)] + body.group(1) * 4 + html[body.end(1) :]
    spacer = f'<div style="height: {pushed_down_mm}mm"></div>'
    save_report(long.replace('<h2 id="table">', spacer + '<h2 id="table">', 1), tmp_path, pdf=True)
    pages = read_pdf(tmp_path / REPORT_PDF)
    problems, spanned = table_header_problems(pages)
    assert problems == [] and spanned >= 2
    assert all(page_problems(p) == [] for p in pages)


# --- the HTML in a browser, at A4 and at screen width -------------------------------------

# Run in a copy of the report only (the report itself holds no script): lists every element
# that reaches beyond the window's width, into a <pre id="layout"> that --dump-dom prints.
_LAYOUT_PROBE = """<script>
window.addEventListener("load", () => {
  const width = document.documentElement.clientWidth;
  const beyond = [];
  for (const el of document.body.querySelectorAll("*")) {
    const r = el.getBoundingClientRect();
    if (r.width > 0 && r.right > width + 0.5) {
      beyond.push(`${el.tagName.toLowerCase()}.${el.className}: ${Math.round(r.right)}`);
    }
  }
  const images = [...document.images].map((im) => im.complete && im.naturalWidth > 0);
  const out = document.createElement("pre");
  out.id = "layout";
  out.textContent = JSON.stringify({
    width: width, scroll: document.documentElement.scrollWidth, beyond: beyond,
    images: images.length, loaded: images.filter(Boolean).length,
  });
  document.body.appendChild(out);
});
</script>"""


def _chromium(*args: str, profile: Path) -> subprocess.CompletedProcess[str]:
    browser = find_browser()
    assert browser is not None
    return subprocess.run(
        [str(browser), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


@pytest.mark.parametrize(("name", "width_px"), [("A4", 794), ("screen", 1280)])
def test_report_lays_out_at_a4_and_screen_width(
    report: Path, tmp_path: Path, name: str, width_px: int
) -> None:
    """At A4's width (210 mm at 96 px per inch) and at a screen's, nothing reaches beyond the
    window, every figure loads, and the page is not blank."""
    probe = tmp_path / "probe.html"
    html = (report / REPORT_HTML).read_text(encoding="utf-8")
    probe.write_text(html.replace("</body>", _LAYOUT_PROBE + "</body>"), encoding="utf-8")
    run = _chromium(
        f"--window-size={width_px},1200",
        "--virtual-time-budget=10000",
        "--dump-dom",
        probe.as_uri(),
        profile=tmp_path / "profile",
    )
    found = re.search(r'<pre id="layout">(.*?)</pre>', run.stdout, re.S)
    assert found is not None, run.stdout[-500:]
    layout = json.loads(found.group(1).replace("&quot;", '"'))
    assert layout["width"] == width_px, layout
    assert layout["beyond"] == [] and layout["scroll"] <= width_px, (name, layout)
    assert layout["images"] == layout["loaded"] >= 3
    shot = tmp_path / f"{name}.png"
    _chromium(
        f"--window-size={width_px},1600",
        f"--screenshot={shot}",
        (report / REPORT_HTML).as_uri(),
        profile=tmp_path / "profile",
    )
    from matplotlib import image as mpimg

    rgb = np.asarray(mpimg.imread(shot))[..., :3]
    assert rgb.shape[:2] == (1600, width_px)
    assert rgb.std() > 0.1  # not blank
