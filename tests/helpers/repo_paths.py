"""Paths into the repository the tests read (shipped presets, README, benchmark results)."""
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PRESETS = REPO / "presets"
DEMO_PRESET = PRESETS / "demo.toml"
README = REPO / "README.md"
