"""Personalization: plan (pure), run (over a transport), verify, and later batch and journal."""
