"""Benchmarks and accuracy evaluation (make bench, make eval): the export side, may import everything."""
