"""The shared field checks: one message form naming Class.field, the expected form and the value."""
import dataclasses

import pytest

from kinject_utils import device as dev
from kinject_utils.settings import (
    SettingTypeError,
    check_bool,
    check_choice,
    check_device,
    check_float,
    check_int,
    is_device_name,
)


@dataclasses.dataclass
class Toy:
    n: object = 1
    x: object = 0.5
    flag: object = True
    mode: object = "a"
    device: object = "auto"


@pytest.mark.parametrize("field, value, check, exc, message", [
    ("n", 0, lambda t: check_int(t, "n", 1), ValueError, "Toy.n must be an integer >= 1, got 0"),
    ("n", 101, lambda t: check_int(t, "n", 0, 100), ValueError, "Toy.n must be an integer in 0..100, got 101"),
    ("n", 1.5, lambda t: check_int(t, "n", 0), SettingTypeError, "Toy.n must be an integer >= 0, got 1.5 (float)"),
    ("n", True, lambda t: check_int(t, "n", 0), SettingTypeError, "Toy.n must be an integer >= 0, got True (bool)"),
    ("x", 1.0, lambda t: check_float(t, "x", 0, 1, hi_open=True), ValueError,
     "Toy.x must be a number in [0, 1), got 1.0"),
    ("x", 0, lambda t: check_float(t, "x", 0, 1, lo_open=True, hi_open=True, hint="try 1e-3"), ValueError,
     "Toy.x must be a number in (0, 1), got 0; try 1e-3"),
    ("x", "1e-3", lambda t: check_float(t, "x", 0), SettingTypeError,
     "Toy.x must be a number >= 0, got '1e-3' (str) (write a number without quotes, e.g. 1e-3"),
    ("flag", "yes", lambda t: check_bool(t, "flag"), SettingTypeError, "Toy.flag must be true/false, got 'yes' (str)"),
    ("mode", "c", lambda t: check_choice(t, "mode", ["a", "b"]), ValueError,
     "Toy.mode must be one of ('a', 'b'), got 'c'"),
    ("device", "gpu", check_device, ValueError, "Toy.device must be one of ('auto', 'cpu', 'cuda') or cuda:N"),
])
def test_each_check_names_class_field_expected_form_and_value(field, value, check, exc, message):
    with pytest.raises(exc) as info:
        check(Toy(**{field: value}))
    assert str(info.value).startswith(message), str(info.value)
    assert isinstance(info.value, ValueError)  # a wrong type is a ValueError too (and a TypeError)


def test_values_in_range_pass_and_come_back():
    t = Toy(n=0, x=1, device="CUDA:3")
    assert check_int(t, "n", 0, 0) == 0 and check_float(t, "x", 0, 1) == 1 and check_bool(t, "flag") is True
    assert check_choice(t, "mode", "ab") == "a" and check_device(t) == "CUDA:3"


def test_device_names_are_what_resolve_device_accepts(monkeypatch):
    monkeypatch.setattr(dev, "cuda_available", lambda: True)
    for name in ("auto", "cpu", "cuda", "cuda:0", "cuda:12", " Cuda:1 "):
        assert is_device_name(name)
        dev.resolve_device(name)
    for name in ("gpu", "cuda:", "cuda:x", "cuda0", "mps", "", None, 0):
        assert not is_device_name(name)
        with pytest.raises(dev.DeviceError):
            dev.resolve_device(name)
