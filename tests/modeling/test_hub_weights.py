"""`--init hf:ORG/NAME[/FILE][@REVISION]`, resolved through a Hugging Face cache built in the test
folder with HF_HUB_OFFLINE set: no network is ever used."""

from __future__ import annotations

import pytest
import torch
from hub_cache import add_cached_repo

from samadapt.errors import UserError
from samadapt.modeling.sources import HubRef, parse_init, weights_path

REPO = "facebook/sam2.1-hiera-tiny"


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    cache = tmp_path / "hf_home" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def test_the_grammar_reads_repository_file_and_revision():
    assert parse_init("hf:org/name").hub == HubRef("org/name")
    assert parse_init("hf:org/name@v1.0").hub == HubRef("org/name", None, "v1.0")
    assert parse_init("hf:org/name/sub/w.pt@main").hub == HubRef("org/name", "sub/w.pt", "main")
    assert str(parse_init("hf:org/name/w.pt@main")) == "hf:org/name/w.pt@main"
    for bad in ("hf:name", "hf:org/name@", "hf:org//w.pt", "hf:org/name/../x.pt", "hf:/name"):
        with pytest.raises(UserError, match="expected hf:ORG/NAME"):
            parse_init(bad)
    with pytest.raises(UserError, match="predict takes random, sam2:PATH or ckpt:DIR"):
        parse_init("hf:org/name", ("random", "sam2", "ckpt"), command="predict")


def test_a_cached_transformers_repository_loads_offline(hub_cache):
    from samadapt.modeling.loading import load_model
    from samadapt.modeling.registry import build_model

    model = build_model("sam2.1-hiera-tiny", 64)
    snapshot = add_cached_repo(hub_cache, REPO, {"README.md": b"weights"})
    model.hf.save_pretrained(snapshot)
    add_cached_repo(hub_cache, REPO, {"README.md": b"no weights"}, revision="v1")  # a tag of another snapshot
    assert weights_path(parse_init(f"hf:{REPO}")) == snapshot
    loaded = load_model("sam2.1-hiera-tiny", weights_path(parse_init(f"hf:{REPO}")), image_size=64)
    for key, value in model.hf.state_dict().items():
        assert torch.equal(value, loaded.hf.state_dict()[key]), key
    with pytest.raises(UserError, match=f"hf:{REPO}@v1: the repository holds no SAM2/SAM weights"):
        weights_path(parse_init(f"hf:{REPO}@v1"))
    with pytest.raises(UserError, match=rf"hf:{REPO}@v2: not in the Hugging Face cache .*hf_home/hub and "
                                        "HF_HUB_OFFLINE is set"):
        weights_path(parse_init(f"hf:{REPO}@v2"))


def test_a_file_of_a_checkpoint_repository_is_named_or_the_only_one(hub_cache):
    snapshot = add_cached_repo(hub_cache, "wanglab/MedSAM2", {"MedSAM2_latest.pt": b"1", "MedSAM2_CTLesion.pt": b"2",
                                                               "README.md": b"card"})
    path = weights_path(parse_init("hf:wanglab/MedSAM2/MedSAM2_latest.pt"))
    assert path == snapshot / "MedSAM2_latest.pt"
    with pytest.raises(UserError, match=r"holds 2 weight files \(MedSAM2_CTLesion.pt, MedSAM2_latest.pt\); name one"):
        weights_path(parse_init("hf:wanglab/MedSAM2"))
    with pytest.raises(UserError, match="hf:wanglab/MedSAM2/absent.pt: not in the Hugging Face cache"):
        weights_path(parse_init("hf:wanglab/MedSAM2/absent.pt"))
    only = add_cached_repo(hub_cache, "acme/one", {"weights.pth": b"3"})
    assert weights_path(parse_init("hf:acme/one")) == only / "weights.pth"
