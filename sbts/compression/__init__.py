"""Compression accounting (the paper's and an honest one) and the ``sbts summary`` report."""

from sbts.compression.accounting import ACCOUNTINGS, LayerCount, ModelCount, honest_count, paper_count
from sbts.compression.summary import config_pair, render_table, summarize, summarize_config, summarize_run

__all__ = ["ACCOUNTINGS", "LayerCount", "ModelCount", "config_pair", "honest_count", "paper_count", "render_table",
           "summarize", "summarize_config", "summarize_run"]
