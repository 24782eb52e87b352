"""Printing the report to PDF with headless Chromium.

The PDF is the HTML report printed by Chromium (or Google Chrome) in headless mode: one source for
both, real text, tables that break across pages. Chromium must be installed to print;
:func:`require_browser` lets a command fail before its work when it is not.

Examples
--------
>>> find_browser() is None or find_browser().name in BROWSER_NAMES
True
"""

from __future__ import annotations

import datetime
import os
import re
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from vertgrade.errors import OutputError

__all__ = ["BROWSER_NAMES", "REPORT_PDF", "find_browser", "html_to_pdf", "require_browser"]

#: File name of the PDF report in a result folder.
REPORT_PDF = "report.pdf"

#: Executables tried, in order, to print the PDF (Debian's ``chromium``, others' names).
BROWSER_NAMES: tuple[str, ...] = (
    "chromium",
    "chromium-browser",
    "google-chrome",
    "google-chrome-stable",
    "chrome",
)

# Headless Chromium flags: no sandbox (containers and root), no GPU, and nothing that reaches the
# network or a user profile.
_BROWSER_FLAGS: tuple[str, ...] = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-dev-shm-usage",
)
_PDF_TIMEOUT_S = 120.0


def find_browser() -> Path | None:
    """The first of :data:`BROWSER_NAMES` found on ``PATH``, or ``None``."""
    for name in BROWSER_NAMES:
        found = shutil.which(name)
        if found:
            return Path(found)
    return None


def require_browser(browser: str | Path | None = None, *, target: str | Path = REPORT_PDF) -> Path:
    """The Chromium executable that will print the PDF, or an :class:`OutputError` naming
    ``target`` that says how to install one (for a command line to fail before its work).

    Parameters
    ----------
    browser : path, optional
        An executable chosen by the user; default :func:`find_browser`.
    target : path
        The PDF the error is about.
    """
    if browser is not None:
        path = Path(browser)
        if shutil.which(str(path)) is None:
            raise OutputError(target, f"{path} is not an executable to print the PDF with")
        return path
    found = find_browser()
    if found is None:
        raise _no_browser(Path(target))
    return found


def _no_browser(target: Path) -> OutputError:
    return OutputError(
        target,
        "writing the PDF needs Chromium (or Google Chrome), and none was found on PATH "
        f"(looked for {', '.join(BROWSER_NAMES)}); install it (Debian/Ubuntu: "
        "apt-get install chromium) or leave out --pdf",
    )


_PDF_DATE = re.compile(rb"/(CreationDate|ModDate) \(D:(\d{14})")


def _fixed_date() -> bytes:
    """The 14 digits written as the PDF's dates: ``SOURCE_DATE_EPOCH`` where set (the
    reproducible-builds convention), else 2000-01-01 00:00:00 UTC."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "")
    when = (
        datetime.datetime.fromtimestamp(int(epoch), tz=datetime.timezone.utc)
        if epoch.isdigit()
        else datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc)
    )
    return when.strftime("%Y%m%d%H%M%S").encode("ascii")


def _fix_dates(path: Path) -> None:
    """Give the printed PDF fixed creation and modification dates, so that printing the same
    report twice gives the same bytes (the digits keep their length: offsets stay valid)."""
    data = path.read_bytes()
    digits = _fixed_date()
    fixed = _PDF_DATE.sub(lambda m: b"/" + m.group(1) + b" (D:" + digits, data)
    if fixed != data:
        path.write_bytes(fixed)


def html_to_pdf(
    html_path: str | Path,
    pdf_path: str | Path,
    *,
    browser: str | Path | None = None,
    timeout_s: float = _PDF_TIMEOUT_S,
) -> Path:
    """Print an HTML file to PDF with headless Chromium (A4, no header or footer).

    ``pdf_path`` is written by Chromium directly: pass a temporary path (as
    :func:`vertgrade.report.html.save_report` does) to get an atomic write.

    Parameters
    ----------
    html_path : path
        The HTML file to print.
    pdf_path : path
        Where the PDF goes.
    browser : path, optional
        The Chromium executable; default :func:`find_browser`.
    timeout_s : float
        Chromium is stopped (with its process group) after this many seconds.

    Returns
    -------
    Path
        ``pdf_path``.

    Raises
    ------
    OutputError
        No Chromium, or it failed, timed out, or wrote no PDF.
    """
    src, target = Path(html_path).resolve(), Path(pdf_path)
    exe = Path(browser) if browser is not None else find_browser()
    if exe is None:
        raise _no_browser(target)
    with tempfile.TemporaryDirectory(
        prefix="vertgrade-chromium-", ignore_cleanup_errors=True
    ) as profile:
        cmd = [
            str(exe),
            *_BROWSER_FLAGS,
            f"--user-data-dir={profile}",
            "--no-pdf-header-footer",
            f"--print-to-pdf={target.resolve()}",
            src.as_uri(),
        ]
        try:
            proc = subprocess.Popen(
                cmd,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as err:
            raise OutputError(target, f"could not start {exe} to print the PDF ({err})") from err
        try:
            _, err_bytes = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise OutputError(
                target, f"{exe} did not finish printing the PDF within {timeout_s:.0f} s"
            ) from None
    ok = proc.returncode == 0 and target.is_file() and target.stat().st_size > 0
    if ok:
        with open(target, "rb") as fh:
            ok = fh.read(5) == b"%PDF-"
    if ok:
        _fix_dates(target)
    if not ok:
        lines = [
            ln
            for ln in err_bytes.decode("utf-8", "replace").splitlines()
            if ln.strip() and "dbus" not in ln
        ]
        detail = lines[-1][-300:] if lines else "no message"
        raise OutputError(
            target, f"{exe} failed to print the PDF (exit status {proc.returncode}): {detail}"
        )
    return target
