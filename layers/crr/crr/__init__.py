"""crr: event-driven cross-region replication for S3 buckets (the domain package shipped in the layer)."""

__version__ = "0.1.0"
