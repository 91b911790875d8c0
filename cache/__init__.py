"""The feature cache: layout, reductions, resumable writer, reader and sequence sampler."""
