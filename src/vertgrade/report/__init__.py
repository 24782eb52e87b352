"""The outputs of a graded study, each from the result as ``result.json`` holds it.

- :mod:`~vertgrade.report.files`: the result folder (``result.json``, which follows
  ``schema/result.schema.json``, ``vertebrae.csv``, ``alignment.csv``, ``bodies.nii.gz``);
- :mod:`~vertgrade.report.style`: the grade colours, the CT window and the other fixed colours;
- :mod:`~vertgrade.report.reformat`: where the images are sampled (curved and planar reformats);
- :mod:`~vertgrade.report.figures`: the overview and the per-vertebra figures;
- :mod:`~vertgrade.report.html` and :mod:`~vertgrade.report.pdf`: the report page and its PDF;
- :mod:`~vertgrade.report.dicom`: DICOM SR, SEG, Secondary Capture and Encapsulated PDF.

The submodules are imported where they are used (matplotlib, Chromium and highdicom are needed
only by some of them).
"""
