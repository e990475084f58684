"""The data side of the training job: layouts, screening, split, balancing and the tf.data pipeline."""
