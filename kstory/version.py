"""kstory's version: the one definition, which pyproject.toml reads too."""

__version__ = "0.1.0"
