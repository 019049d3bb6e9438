from helpers import run_main


def test_prints_every_layer():
    result = run_main("scripts/receptive_field.py", "--model.width", 8)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2 + 17 + 1  # header, rule, 17 convs, pool
    assert lines[-2].split() == ["stages.3.1.conv2", "3", "1", "4", "8", "109"]
