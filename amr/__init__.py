"""amr: audio moment retrieval from long audio (DCASE 2026 Task 6)."""

__version__ = "0.1.0"
