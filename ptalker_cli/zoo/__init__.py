"""The model zoo: named models, hub downloads and verification."""
