"""Image retrieval: embeddings, the HDF5 feature base, search and the contest's metrics."""
