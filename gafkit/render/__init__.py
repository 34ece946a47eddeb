"""Cameras and the differentiable mesh rasterizer (nvdiffrast on CUDA, pure torch anywhere)."""
