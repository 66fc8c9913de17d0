"""sbts: Sparse Binary Transformers for multivariate time series."""

from sbts.config import ModelConfig, RunConfig, TrainConfig
from sbts.errors import SBTSError
from sbts.models import create_model, list_models

__version__ = "0.1.0"

__all__ = ["ModelConfig", "RunConfig", "SBTSError", "TrainConfig", "__version__", "create_model", "list_models"]
