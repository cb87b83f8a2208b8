"""Video files <-> frames: probe, read, write, output paths."""
