"""Simulated meters for the demo and the tests (no hardware needed)."""
