"""Quality metrics for decoded audio."""
