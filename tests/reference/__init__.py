"""Test-only reference oracles: the official ``sam2`` package (``official``), transformers
(``hf``) and a minimal torchvision stand-in (``torchvision``). Import as ``reference.official``."""
