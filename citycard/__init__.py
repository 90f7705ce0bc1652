"""citycard: personalize multi-application CPU city cards and talk to them in APDUs."""

__version__ = "0.1.0"
