"""aeq bench."""
