"""Config schemas, their registration with Hydra, and validation (no torch, no TRL)."""
