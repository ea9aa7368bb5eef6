"""Segment <-> Klaviyo integration as a Prefect 3 flow collection."""

__version__ = "0.1.0"
