"""What ModelArts imports: the SavedModel with the serving contract (saved_model.py) and the
model package around it (package.py); the package rules themselves live in serving/check.py,
which travels inside the package."""
