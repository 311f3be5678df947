"""ganforge: the command line and the Python client of the GAN training service."""

# The one place the version is written: pyproject reads it (dynamic version), `ganforge --version`
# prints it, and an install's metadata carries it.
__version__ = "0.1.0"
