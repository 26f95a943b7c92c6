"""Classifiers and their training: the model zoo, checkpoints, ``fit``/``predict``, victims and recipes."""
