"""Studies: a grid of runs described in TOML, run on Ray and reported as pooled tables (shipped studies are the .toml files here)."""
