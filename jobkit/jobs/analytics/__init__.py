"""The aggregation job: metrics by period and group over a time range of a table, a query or Parquet/CSV files,
as a flow of one child per partition (docs/analytics.md)."""

from .errors import AggregateSetupError
from .models import Aggregate, AggregateReport, Metric, PartitionResult
from .task import aggregate, aggregate_flow, aggregate_partition

__all__ = ["Aggregate", "AggregateReport", "AggregateSetupError", "Metric", "PartitionResult", "aggregate",
           "aggregate_flow", "aggregate_partition"]
