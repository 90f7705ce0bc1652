"""The citycard command line (click).  Thin: every command is a few lines over the library."""
