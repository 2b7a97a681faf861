"""Validation samples outside the trainer: how they are drawn (sampling.py: guidance, steps and shift from the
checkpoint's own configs) and how they are shown (contact_sheet.py: a PNG grid of a sample's frames)."""
