"""fairtrial: a fair trial for every ML idea."""

__version__ = "0.1.0"
