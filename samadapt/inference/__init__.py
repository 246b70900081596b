"""Running a model on images or volumes: `samadapt predict`."""
