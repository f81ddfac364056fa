import pytest
import torch
from torch import nn

from lit_codec.nn.configurable import Configurable, build_module, module_config


class Inner(Configurable, nn.Module):
    def __init__(self, dim: int, scales: tuple[int, ...] = (1, 2)):
        super().__init__()
        self.lin = nn.Linear(dim, dim)


class Outer(Configurable, nn.Module):
    def __init__(self, inner: nn.Module, parts: list[nn.Module] | None = None, name: str = "x"):
        super().__init__()
        self.inner = inner
        self.parts = nn.ModuleList(parts or [])


def test_config_round_trip_rebuilds_nested_modules():
    m = Outer(Inner(3), parts=[Inner(2, scales=(4,))], name="y")
    cfg = module_config(m)
    assert cfg["class_path"].endswith("Outer")
    assert cfg["init_args"]["inner"]["init_args"] == {"dim": 3, "scales": (1, 2)}
    assert cfg["init_args"]["parts"][0]["init_args"]["scales"] == (4,)
    rebuilt = build_module(cfg, trust=True)
    assert isinstance(rebuilt.parts[0], Inner) and rebuilt.inner.lin.in_features == 3
    assert module_config(rebuilt) == cfg


def test_untrusted_class_path_is_refused():
    with pytest.raises(ValueError, match="refusing"):
        build_module({"class_path": "os.system", "init_args": {"command": "true"}})


def test_config_survives_weights_only_load(tmp_path):
    cfg = module_config(Outer(Inner(3)))
    torch.save({"cfg": cfg}, tmp_path / "c.pt")
    assert torch.load(tmp_path / "c.pt", weights_only=True)["cfg"] == cfg
