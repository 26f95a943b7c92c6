"""Blinded reader studies: do doctors diagnose encrypted images as well as the clean ones (paper Fig. 5-6)?

- :func:`build_study` picks the test cases and writes, per reader, two blinded diagnostic sessions and a
  forced-choice session (radiologically oriented PNG, DICOM with a DICOMDIR, an offline ``index.html``
  viewer, ``answers.csv``, ``README.txt``) plus the answer key.
- :func:`score_study` checks the answers and writes accuracy, the paired difference with a non-inferiority
  test, the Fig. 6 concordance table, an exact McNemar test, Cohen's kappa, confusion matrices and the
  forced-choice detection rate (``report.json``, ``report.md``, charts).
- :func:`simulate_answers` writes answers of simulated readers with known behaviour.

See ``docs/reader-study.md``.
"""

from __future__ import annotations

from medenc.reader_study.build import BuildResult, build_study
from medenc.reader_study.score import ScoreResult, score_study
from medenc.reader_study.simulate import simulate_answers

__all__ = ["BuildResult", "ScoreResult", "build_study", "score_study", "simulate_answers"]
