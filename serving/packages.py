"""Where a model package is: the folder holding saved_model.pb, whether given that folder or
the train_url (or its local copy) holding it as model/. One answer for the predictor, the
ensemble, evaluation and retrieval. Copied into packages: Python 3.7 syntax."""
import os


def package_in(folder):
    """`folder` or its model/ subfolder, whichever holds saved_model.pb; None if neither."""
    for candidate in (folder, os.path.join(folder, "model")):
        if os.path.isfile(os.path.join(candidate, "saved_model.pb")):
            return candidate
    return None
