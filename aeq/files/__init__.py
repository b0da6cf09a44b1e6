"""The user's files: reading images, arrays and codes into checked batches, writing results.

Runs on the client's machine (the CLI and the Python API), never in a worker. The modules import
one way, down this list (tests/unit/test_inputs.py checks it):

- ``inputs`` (the CLI's INPUT arguments -> sources) and ``outputs`` (results -> files);
- ``image_parts`` (images from image files and arrays) and ``code_files`` (codes from arrays);
- ``array_files`` (``.npy``/``.npz``/IDX headers checked, data streamed), ``image_files`` (one
  image decoded), ``names``, ``png``, ``staging``.
"""
