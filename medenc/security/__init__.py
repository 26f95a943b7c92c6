"""Security evaluation: what a determined data thief recovers from encrypted images, and how.

- :mod:`medenc.security.defenses`: the thief's input transformations (JPEG, blur, median, bit depth,
  image shortcut squeezing) and training recipes (flips, crops, early stopping, adversarial training,
  fine-tuning).
- :mod:`medenc.security.evaluate`: the defence x architecture table (``medenc security-eval``).
- :mod:`medenc.security.key_recovery`: the paper's key-recovery attack, with exact candidate counts.
- :mod:`medenc.security.report`: ``report.md`` and PNG charts.

Hardening of the encryption itself lives in :mod:`medenc.core.harden`; ``docs/threat-model.md`` has the
measured results.
"""
