"""Lead scoring: specs, features, training, calibration, explanations, cold-start rules, batch scoring."""
