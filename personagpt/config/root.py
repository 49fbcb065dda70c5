"""The whole run's config: one section per stage. Stage sections live in their own modules."""

from __future__ import annotations

from typing import Any

from pydantic import Field, PrivateAttr

from personagpt.config.base import Section
from personagpt.config.chat import ChatConfig
from personagpt.config.data import DataConfig
from personagpt.config.distill import DistillConfig
from personagpt.config.eval import EvalConfig
from personagpt.config.loadtest import LoadtestConfig
from personagpt.config.model import ModelConfig
from personagpt.config.pipeline import PipelineConfig
from personagpt.config.quantize import QuantizeConfig
from personagpt.config.serve import ServeConfig
from personagpt.config.train import TrainConfig


class Config(Section):
    name: str = Field("run", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", description="run name: runs/NAME")
    seed: int = 0
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    quantize: QuantizeConfig = Field(default_factory=QuantizeConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    distill: DistillConfig = Field(default_factory=DistillConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    loadtest: LoadtestConfig = Field(default_factory=LoadtestConfig)
    pipeline: PipelineConfig = Field(default_factory=PipelineConfig)
    chat: ChatConfig = Field(default_factory=ChatConfig)

    _source: str | None = PrivateAttr(default=None)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")
