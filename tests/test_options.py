"""pydeform.options: the shared checks of config fields."""
from types import SimpleNamespace

import pytest

from pydeform.options import check_ints


@pytest.mark.parametrize("value", [0, -1, 1.0, True, "3", None])
def test_check_ints_refuses_what_is_not_a_positive_int(value):
    with pytest.raises(ValueError, match=f"ngf must be a positive int, got {value!r}"):
        check_ints(SimpleNamespace(ngf=value, ndf=4), ("ndf", "ngf"))


def test_check_ints_with_a_minimum():
    check_ints(SimpleNamespace(blocks=0), ("blocks",), minimum=0)
    with pytest.raises(ValueError, match="blocks must be an int >= 0, got -1"):
        check_ints(SimpleNamespace(blocks=-1), ("blocks",), minimum=0)
    check_ints(SimpleNamespace(a=1, b=7), ("a", "b"))
