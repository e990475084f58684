"""The platform framework's `model_service` package (stand-in): loading the service file."""
import importlib.util
import os


def load_service(path, name=None):
    """Import the user's service file by path, as the framework does."""
    name = name or os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
