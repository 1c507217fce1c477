"""cnn-stress-testing: the library the stage scripts call (stresstest/stages/<script>.py, one per script)."""
