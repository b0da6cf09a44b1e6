"""aeq evaluation."""
