"""hvtui: train HunyuanVideo 1.5 LoRAs from the terminal."""

__version__ = "0.1.0"
