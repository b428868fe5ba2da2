"""The checkpoints API service: the Cedana-compatible v2 checkpoints contract, described in
README.md ("The checkpoints API"); `ckpt.api.routes` serves it. Its schemas and its client live
in `ckpt.contract` (checkpoints_api, checkpoints_client), which the operator and the user CLI
import without pulling in FastAPI or SQLAlchemy.
"""
