"""Files -> models: finding, loading, downloading, converting and tiny test weights."""
