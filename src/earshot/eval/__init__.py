"""Retrieval evaluation: DCASE-style metrics with bootstrap CIs (`metrics`), reports (`report`)."""

from earshot.eval.metrics import (
    audio_to_text_relevance,
    average_precision_at_k,
    bidirectional_report,
    bootstrap_ci,
    hits_from_ranks,
    per_query_metrics,
    precision_at_k,
    ranked_relevance,
    recall_at_k,
    recall_fraction_at_k,
    retrieval_report,
    target_ranks,
    targets_to_relevance,
)
from earshot.eval.recordings import cluster_bootstrap_ci, two_way_bootstrap_map_ci
from earshot.eval.report import format_table, to_markdown, write_report

__all__ = [
    "audio_to_text_relevance",
    "average_precision_at_k",
    "bidirectional_report",
    "bootstrap_ci",
    "cluster_bootstrap_ci",
    "format_table",
    "hits_from_ranks",
    "per_query_metrics",
    "precision_at_k",
    "ranked_relevance",
    "recall_at_k",
    "recall_fraction_at_k",
    "retrieval_report",
    "target_ranks",
    "targets_to_relevance",
    "to_markdown",
    "two_way_bootstrap_map_ci",
    "write_report",
]
