"""Training the article's five autoencoders with Keras (TensorFlow). Imports TensorFlow: keep it
out of the worker and the job-submitting CLI paths."""
