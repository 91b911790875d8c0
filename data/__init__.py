"""Recordings: the episode store, labels, legacy import, split, augmentation and game profiles."""
