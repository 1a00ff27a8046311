"""What notebooks compute from stored runs: control charts, data quality, accounting."""
