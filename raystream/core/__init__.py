"""Internal: time, keys and other plain-Python building blocks (no Ray import)."""
