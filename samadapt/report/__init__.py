"""Reports of samadapt runs (HTML, figures)."""
