"""What ModelArts imports: so far the SavedModel with the serving contract (saved_model.py).
The package around it (config.json, labels.json, customize_service.py) and its check are
still to come."""
