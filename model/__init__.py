"""ShapeGen4D's networks (torch only: no Ray, no MLflow, no file formats beyond weights)."""
from model.base import Base, build_base

__all__ = ["Base", "build_base"]
