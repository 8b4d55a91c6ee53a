"""Reference solutions in numpy, one concept per module."""
