"""The job queue's contract: Redis connections, the job store and the chunk wire format.

Both sides stand on it: the client writes jobs and chunk messages, the worker reads and finishes
them. Nothing here imports ONNX Runtime, Celery or TensorFlow.
"""
