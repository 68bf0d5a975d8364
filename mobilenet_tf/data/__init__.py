"""Datasets: procedural synthetic data (no download) and real-data pipelines."""
