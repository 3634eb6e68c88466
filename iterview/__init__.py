"""iterview: 3D-aware image generation with 2D diffusion models."""

__version__ = "0.1.0"
