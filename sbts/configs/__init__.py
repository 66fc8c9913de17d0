"""Shipped run configurations (YAML); see paper/ for the paper's settings."""
