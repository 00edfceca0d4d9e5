"""Digit datasets: raw sources with checksums, batched distortions, the DataModule."""
