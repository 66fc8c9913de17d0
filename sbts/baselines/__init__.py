"""Simple predictors that every Transformer result is reported next to."""

from sbts.baselines.forecasting import (BASELINES, Persistence, RidgeOnWindow, RidgePerVariable, SeasonalPersistence,
                                        WindowMean)

__all__ = ["BASELINES", "Persistence", "RidgeOnWindow", "RidgePerVariable", "SeasonalPersistence", "WindowMean"]
