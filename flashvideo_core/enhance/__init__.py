"""Stage II on any video: plans, windows, sizing, colour, streaming."""
