"""Serving a model: the predictor, precision plans, CPU thread sizing."""
