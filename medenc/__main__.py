"""``python -m medenc``: the same command line as the ``medenc`` console script."""

from medenc.cli import main

if __name__ == "__main__":
    main()
