"""proxyscale: small-to-large generalization of training-data effects."""
__version__ = "0.1.0"
