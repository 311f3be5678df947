"""ganforge: the command line and the Python client of the GAN training service."""
