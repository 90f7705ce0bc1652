"""Test support: simulated cards for your own tests, behind a real pcscd or in process.

* :mod:`citycard.testing.plugin`: the pytest plugin (``citycard_card``, ``citycard_reader``,
  ``citycard_served_card``, ``citycard_pcscd``; the ``citycard`` marker), loaded by pytest
  through the ``pytest11`` entry point.  README "For CI pipelines".
* :mod:`citycard.testing.cards`: the same cards without pytest (``new_card``, ``load_card``,
  ``personalize_demo``, ``serve_in_reader``).
* :mod:`citycard.testing.pcscd`: :class:`~citycard.testing.pcscd.PrivatePcscd`, a pcscd in
  its own mount namespace with a vpcd virtual reader.
* :mod:`citycard.testing.democard`: a tiny card for testing PC/SC hosts.
* :mod:`citycard.testing.postgres`, :mod:`citycard.testing.softhsm`: a private PostgreSQL
  server and SoftHSM2 token for the journal and key-source tests.
* :mod:`citycard.testing.demo`: ``./scripts/demo``.

Importing this package imports nothing else (no pytest, no pyscard).
"""
