"""Evaluation on numpy arrays: metrics, reports (JSON, CSV, Markdown) and plots; no TensorFlow."""
