"""Worker shards and their protocol."""
