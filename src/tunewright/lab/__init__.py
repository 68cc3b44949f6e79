"""The lab: tiny local models and synthetic data, so everything runs offline."""
