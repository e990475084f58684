"""This bundle's version: recorded in each run's run_config.json and in every feature base,
so a file can be traced to the code that wrote it. Raised when a format or a contract
(flags, the package, the feature base) changes."""
VERSION = "0.8.0"
