"""Keras 3 network builders and weight converters (imported as ``advface.networks``)."""
