"""The base of every model family's config section: a pydantic section (the `type` and the
family's keys, checked with the config's own wording, every error at once) that builds its
model for the data it is given."""

from __future__ import annotations

from dlrun.config.fields import Section
from dlrun.models._meta import DataMeta
from dlrun.nn import Module


class ModelSection(Section):
    """`model`: a family's keys; `build` checks them against the data and makes the model."""

    type: str

    def build(self, data: DataMeta, path: str) -> Module:
        raise NotImplementedError
