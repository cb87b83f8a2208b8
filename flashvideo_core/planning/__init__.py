"""The memory planner (peak device memory of a stage from shapes alone, the fastest mode that fits) and
its use when a transformer loads: ModelModes resolved for a size and applied."""
