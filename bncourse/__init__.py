"""bncourse: a JupyterLab course on batch normalization, and its companion package."""

__version__ = "0.1.0"
