"""Shared code of the cnn-stress-testing stage scripts."""
