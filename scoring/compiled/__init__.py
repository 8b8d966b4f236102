"""The fitted pipeline compiled to numpy: trees, linear terms, contributions, checked at load."""

from scoring.compiled.linear import SMALL_BATCH
from scoring.compiled.model import CompiledModel, PipelineModel, compile_pipeline

__all__ = ["SMALL_BATCH", "CompiledModel", "PipelineModel", "compile_pipeline"]
