"""Route deduplication keys (see `postee.eventkeys`, where they are built)."""

from postee.eventkeys import dedup_key, go_float, go_format

__all__ = ["dedup_key", "go_float", "go_format"]
