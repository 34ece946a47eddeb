"""Gaussian rasterizer backends sharing one function signature: gsplat (CUDA) and a torch reference."""
