"""`samadapt studio`: a local web app to look at images and volumes, prompt SAM2, correct labels
and retrain the few-shot decoder on them."""
