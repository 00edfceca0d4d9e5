"""Looking at data and results: galleries, tables, curves."""
