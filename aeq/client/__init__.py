"""The client side: submitting jobs, following them to the end, local mode and the job commands."""
