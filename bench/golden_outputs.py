"""Write, or compare, every result file of a fixed set of runs: the refactoring guard.

Usage::

    python bench/golden_outputs.py write before/      # grade the set with the installed vertgrade
    python bench/golden_outputs.py compare before/ after/

The set: phantoms in several orientations and spacings (fractures of every type, labels only,
a scoliotic spine) made with ``vertgrade phantom``, and every subject in ``../shared/data`` (or
``$VERTGRADE_TEST_DATA``) that has labels, each graded with ``vertgrade grade`` as a user runs
it. Everything goes through the command line, so the script does not depend on where things
live inside the package.

``compare`` checks every file byte for byte (NIfTI files after decompression, so a gzip time
stamp does not count), except in ``result.json``: the provenance's versions, and parameters that
only one side has (new parameters), are left out; a parameter both sides have must be equal. In
``report.html`` the version, the paths and the provenance's versions and parameters tables are
left out.
It prints one line per difference and exits 1 if there is any.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

PHANTOMS: list[tuple[str, list[str]]] = [
    (
        "wedge_ras",
        ["--levels", "T10-L3", "--fracture", "L1:wedge:0.35", "--fracture", "L3:crush:0.22"],
    ),
    (
        "pir_311",
        [
            "--levels",
            "T9-L4",
            "--fracture",
            "T12:biconcave:0.3",
            "--orientation",
            "PIR",
            "--spacing",
            "3,1,1",
        ],
    ),
    (
        "lps_adjacent",
        [
            "--levels",
            "T11-L5",
            "--fracture",
            "L1:crush:0.45",
            "--fracture",
            "L2:wedge:0.28",
            "--orientation",
            "LPS",
        ],
    ),
    (
        "scoliosis",
        ["--levels", "T4-L2", "--scoliosis", "T6-T11:right:30", "--fracture", "T8:wedge:0.4"],
    ),
]


def data_dir() -> Path | None:
    env = os.environ.get("VERTGRADE_TEST_DATA")
    p = Path(env) if env else REPO.parent / "shared" / "data"
    return p if p.is_dir() else None


def _run(args: list[str]) -> None:
    proc = subprocess.run(["vertgrade", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"vertgrade {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")


def _real_cases(data: Path) -> list[tuple[str, list[str]]]:
    cases: list[tuple[str, list[str]]] = []
    for folder in sorted(p for p in data.iterdir() if p.is_dir()):
        files = sorted(folder.iterdir())
        cts = [f for f in files if f.name.endswith("_ct.nii.gz")]
        msk = [f for f in files if "seg-vert" in f.name and f.name.endswith("_msk.nii.gz")]
        if folder.name.startswith("verse") and msk:
            if cts:
                cases.append((folder.name, [str(folder)]))
            else:
                cases.append((folder.name, ["--labels", str(msk[0])]))
        elif folder.name == "tptbox-l3" and cts and msk:
            cases.append((folder.name, [str(cts[0]), "--labels", str(msk[0])]))
        elif folder.name == "totalseg-example":
            ct = [f for f in files if f.name.endswith("ct.nii.gz")]
            lab = [f for f in files if "vertebrae" in f.name and "body" not in f.name]
            body = [f for f in files if "vertebrae_body" in f.name]
            if ct and lab:
                cases.append((folder.name, [str(ct[0]), "--labels", str(lab[0])]))
                if body:
                    cases.append(
                        (
                            f"{folder.name}-bodies",
                            [str(ct[0]), "--labels", str(lab[0]), "--bodies", str(body[0])],
                        )
                    )
    return cases


def write(out: Path) -> None:
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for name, opts in PHANTOMS:
        ph = out / "phantoms" / name
        _run(["phantom", "-o", str(ph), *opts])
        _run(
            [
                "grade",
                str(ph / "ct.nii.gz"),
                "--labels",
                str(ph / "labels.nii.gz"),
                "-o",
                str(out / "results" / name),
                "--quiet",
            ]
        )
        _run(
            [
                "grade",
                "--labels",
                str(ph / "labels.nii.gz"),
                "-o",
                str(out / "results" / f"{name}-labels-only"),
                "--quiet",
            ]
        )
        print(f"phantom {name}", flush=True)
    # one report (its HTML embeds the figures and the provenance)
    ph = out / "phantoms" / PHANTOMS[0][0]
    _run(
        [
            "grade",
            str(ph / "ct.nii.gz"),
            "--labels",
            str(ph / "labels.nii.gz"),
            "-o",
            str(out / "results" / "report"),
            "--quiet",
            "--report",
        ]
    )
    version = subprocess.run(["vertgrade", "--version"], capture_output=True, text=True)
    (out / "version.txt").write_text(version.stdout.split()[-1])
    data = data_dir()
    if data is None:
        print("no ../shared/data: real cases left out")
        return
    for name, args in _real_cases(data):
        _run(["grade", *args, "-o", str(out / "results" / name), "--quiet"])
        print(f"real {name}", flush=True)


def _strip(doc: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    doc = json.loads(json.dumps(doc))
    prov = doc.get("provenance", {})
    prov.pop("versions", None)
    params = prov.get("parameters", {})
    other_params = other.get("provenance", {}).get("parameters", {})
    prov["parameters"] = _common(params, other_params)
    return doc


def _common(a: Any, b: Any) -> Any:
    if isinstance(a, dict) and isinstance(b, dict):
        return {k: _common(a[k], b[k]) for k in a if k in b}
    return a


def _bytes(path: Path, root: Path) -> bytes:
    data = path.read_bytes()
    if path.name.endswith(".gz"):
        return gzip.decompress(data)
    if path.suffix == ".html":  # the report quotes the version and the input paths
        version = (root / "version.txt").read_text().encode()
        data = data.replace(version, b"<version>").replace(str(root.resolve()).encode(), b"<root>")
        # the parameters and versions tables of its provenance (new parameters may appear)
        data = re.sub(
            rb"<summary>Parameters</summary><pre>.*?</pre>", b"<parameters>", data, flags=re.S
        )
        data = re.sub(
            rb"<summary>Versions</summary><table>.*?</table>", b"<versions>", data, flags=re.S
        )
    return data


def compare(a: Path, b: Path) -> int:
    files_a = {p.relative_to(a) for p in a.rglob("*") if p.is_file()}
    files_b = {p.relative_to(b) for p in b.rglob("*") if p.is_file()}
    problems = [f"only in {a}: {p}" for p in sorted(files_a - files_b)]
    problems += [f"only in {b}: {p}" for p in sorted(files_b - files_a)]
    for rel in sorted(files_a & files_b):
        pa, pb = a / rel, b / rel
        if rel.name == "result.json":
            da = json.loads(pa.read_text().replace(str(a.resolve()), "<root>"))
            db = json.loads(pb.read_text().replace(str(b.resolve()), "<root>"))
            if _strip(da, db) != _strip(db, da):
                problems.append(f"differs: {rel}")
        elif rel.name == "version.txt":
            continue
        elif _bytes(pa, a) != _bytes(pb, b):
            problems.append(f"differs: {rel}")
    for line in problems:
        print(line)
    n = len(files_a & files_b)
    print(f"{n} files compared, {len(problems)} differences")
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("write")
    w.add_argument("out", type=Path)
    c = sub.add_parser("compare")
    c.add_argument("a", type=Path)
    c.add_argument("b", type=Path)
    ns = ap.parse_args(argv)
    if ns.cmd == "write":
        write(ns.out)
        return 0
    return compare(ns.a, ns.b)


if __name__ == "__main__":
    sys.exit(main())
