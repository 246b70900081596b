"""Settings of `samadapt studio`, with the defaults its options read and their checks. Light (no
torch, no web framework): the command module reads the defaults at start-up."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from samadapt.errors import UserError
from samadapt.fewshot.config import CacheSettings
from samadapt.options import check_at_least, flag

# Where the studio keeps its state inside FOLDER (edits and their history, caches, runs, exports).
STATE_DIR = ".samadapt-studio"
LOCAL_HOST = "127.0.0.1"
# How a request carries the access token besides the `token` query parameter (see server.py).
TOKEN_HEADER = "X-Studio-Token"
TOKEN_COOKIE = "samadapt_studio_token"
ASSETS = Path(__file__).parent / "assets"  # the page, shipped as package data


@dataclass(frozen=True)
class StudioConfig:
    model: str = CacheSettings.model
    init: str = CacheSettings.init
    image_size: int = CacheSettings.image_size
    host: str = LOCAL_HOST
    port: int = 0  # 0: a free port chosen by the system
    classes: str = "foreground"  # comma-separated, used when FOLDER has no dataset description
    epochs: int = 30  # few-shot decoder training per "train" click: seconds on a CPU
    max_upload_mb: int = 256
    features_per_case: int = 64  # slices whose encoder features stay in memory for prompting

    def validate(self) -> None:
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise UserError(f"{flag('port')} {self.port}: must be a port number in 0..65535 (0: any free port)")
        for name in ("image_size", "epochs", "max_upload_mb", "features_per_case"):
            check_at_least(self, name, 1)
        if not self.host.strip():
            raise UserError(f"{flag('host')} must not be empty")
        if not self.class_names():
            raise UserError(f"{flag('classes')} {self.classes!r}: give at least one class name")

    def class_names(self) -> list[str]:
        names = [n.strip() for n in self.classes.split(",") if n.strip()]
        if len(set(names)) != len(names):
            raise UserError(f"{flag('classes')} {self.classes!r}: class names repeat")
        return names
