"""The pure-torch core: key, targeted PGD, combiners, hardening, the encryptor, the model-input mapping.

Modules here import only torch, numpy and :mod:`medenc.errors` / :mod:`medenc.atomic` (checked by
``tests/test_layout.py``), so they can be used without MONAI or any medical-image library.
"""
