import json

import pytest

from fast_cifar import train
from fast_cifar.errors import UserError
from fast_cifar.files import lock_folder
from fast_cifar.run_folder import make_run_folder

from helpers import error_lines, one_epoch


def test_run_folder_errors(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match="cannot write to output folder"):
        make_run_folder(tmp_path / "file" / "runs", "x")
    first, first_lock = make_run_folder(tmp_path, "")
    second, second_lock = make_run_folder(tmp_path, "")  # in the same second: its own folder
    assert first.parent == second.parent == tmp_path and first != second  # date-time names
    first_lock.close()
    second_lock.close()


@pytest.mark.slow
def test_a_second_run_never_takes_over_a_run_folder(synthetic_folder, tmp_path, capsys):
    args = one_epoch(synthetic_folder, tmp_path, "mine")
    train.main(args)
    record = json.loads((tmp_path / "mine" / "results.json").read_text())
    with pytest.raises(SystemExit) as exit:
        train.main(args)
    assert exit.value.code == 2
    assert "already holds a run" in error_lines(capsys.readouterr().err)[-1]
    assert json.loads((tmp_path / "mine" / "results.json").read_text()) == record

    # --output.overwrite replaces it, and leaves none of the earlier run's files behind.
    assert (tmp_path / "mine" / "lr_finder.png").exists()
    train.main(args + ["--output.overwrite", "true", "--lr_finder.enabled", "false"])
    assert not (tmp_path / "mine" / "lr_finder.png").exists()


@pytest.mark.slow
def test_a_run_folder_in_use_is_refused(synthetic_folder, tmp_path, capsys):
    folder = tmp_path / "busy"
    folder.mkdir()
    held = lock_folder(folder)  # as a run in another process holds it
    try:
        with pytest.raises(SystemExit):
            train.main(one_epoch(synthetic_folder, tmp_path, "busy"))
        assert "is in use by another run" in error_lines(capsys.readouterr().err)[-1]
        assert not (folder / "results.json").exists()
    finally:
        held.close()
