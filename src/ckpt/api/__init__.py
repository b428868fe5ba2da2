"""The checkpoints API service: the Cedana-compatible v2 checkpoints contract, described in
README.md ("The checkpoints API"); `ckpt.api.routes` serves it and `ckpt.api.models` holds
its schemas.

Kept free of imports so that `ckpt.api.models` can be used by clients without pulling in
FastAPI or SQLAlchemy.
"""
