"""The diffusers + PEFT training backend. Everything here imports torch: load it only to train."""
