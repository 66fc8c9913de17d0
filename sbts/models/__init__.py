from sbts.models.registry import create_model, list_models, model_config, model_defaults, register_model
from sbts.models.transformer import EncoderLayer, TimeSeriesTransformer

__all__ = ["EncoderLayer", "TimeSeriesTransformer", "create_model", "list_models", "model_config", "model_defaults",
           "register_model"]
