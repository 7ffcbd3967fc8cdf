"""Offline text: where it comes from (sources), training pairs built from it (pairs)."""
