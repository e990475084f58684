"""Backbones (keras.applications, offline weights), heads, losses and the model build function.

Empty until the training work fills it; see pretrained/README.md for the weight files expected.
"""
