"""Submitting to ModelArts from any machine: the code folder packed and uploaded, training jobs
created and followed, a model imported and deployed (submit.py orchestrates these)."""
