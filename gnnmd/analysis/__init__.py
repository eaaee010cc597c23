"""Figures and reports made from trained models, trajectories and benchmark results."""
