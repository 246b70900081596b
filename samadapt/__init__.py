"""samadapt: adapt Segment Anything models (SAM2, SAM) to medical images when labels are scarce."""

__version__ = "0.1.0"
