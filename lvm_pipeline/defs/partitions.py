"""One dynamic partition per ingestion batch, keyed by the landing file's name."""

from dagster import DynamicPartitionsDefinition

batches = DynamicPartitionsDefinition(name="batches")
