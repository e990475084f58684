"""The model side: backbones (keras.applications, offline weights), the normalisation layer,
the classifier head, and the loss. See pretrained/README.md for the weight files expected."""
