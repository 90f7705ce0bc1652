"""Personalization: :mod:`~citycard.perso.job` (profile, data and keys checked, ready to
plan), :mod:`~citycard.perso.plan` (pure), :mod:`~citycard.perso.run` (over a card session),
:mod:`~citycard.perso.verify`, :mod:`~citycard.perso.dump`, and bureau batches with a
journal (:mod:`~citycard.perso.batch`, :mod:`~citycard.perso.journal`)."""
