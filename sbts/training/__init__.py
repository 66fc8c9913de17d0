from sbts.atomic import atomic_write_json
from sbts.training.checkpoint import load_checkpoint, save_checkpoint
from sbts.training.engine import FitResult, Trainer, resolve_device, seed_everything

__all__ = ["FitResult", "Trainer", "atomic_write_json", "load_checkpoint", "resolve_device", "save_checkpoint",
           "seed_everything"]
