"""The demo: the whole method, end to end, on phantoms or a labelled dataset (`samadapt demo`,
registered in samadapt/demo/commands.py; the stages are in pipeline.py, the run in run.py)."""
