"""Verification: spec-decode metrics, corruption detectors and measured request phases."""
