"""The shared base of every config model."""

from pydantic import BaseModel, ConfigDict

__all__ = ["XdplbModel"]


class XdplbModel(BaseModel):
    """Frozen, and a typo in the file is an error rather than a silently ignored key."""

    model_config = ConfigDict(extra="forbid", frozen=True)
