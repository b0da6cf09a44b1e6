"""aeq worker."""
