__doc__ = "placeholder"
