"""Pieces every stage of aeq shares: errors, settings, the model catalogue and IDX files.

Nothing here imports TensorFlow or ONNX Runtime, so the worker and the client can use all of it.
"""
