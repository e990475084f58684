"""The model package ModelArts imports: the SavedModel (image bytes in, probabilities out),
config.json, labels.json and customize_service.py, and the check of those rules."""
