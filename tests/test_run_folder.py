import pytest

from fast_cifar.errors import UserError
from fast_cifar.run_folder import make_run_folder


def test_run_folder_errors(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match="cannot write to output folder"):
        make_run_folder(tmp_path / "file" / "runs", "x")
    first, first_lock = make_run_folder(tmp_path, "")
    second, second_lock = make_run_folder(tmp_path, "")  # in the same second: its own folder
    assert first.parent == second.parent == tmp_path and first != second  # date-time names
    first_lock.close()
    second_lock.close()
