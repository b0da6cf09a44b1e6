"""The user's files: reading images, arrays and codes into checked batches, writing results.

Runs on the client's machine (the CLI and the Python API), never in a worker.
"""
