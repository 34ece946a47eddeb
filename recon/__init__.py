"""Gaussian head avatars bound to the head mesh: fit, eval, animate, export."""
