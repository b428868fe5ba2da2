"""The checkpoints API service (see CHECKPOINTS_API.md).

Kept free of imports so that `ckpt.api.models` can be used by clients without pulling in
FastAPI or SQLAlchemy.
"""
