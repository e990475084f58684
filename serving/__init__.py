"""What the deployed predictor needs beside customize_service.py: request checks, cross-request
batching, the local HTTP server and the package check. Copied into model/ with it, so it imports
nothing else of this project and keeps to Python 3.7 syntax (ModelArts' runtimes)."""
