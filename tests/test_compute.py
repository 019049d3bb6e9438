"""compute.py: the device, precision and loader a run picks, and why."""
import torch

from fast_cifar.compute import cpu_bf16_flags, pick_loader, pick_precision


def test_auto_precision_is_bf16_only_where_the_hardware_has_it(tmp_path, monkeypatch):
    cpu = torch.device("cpu")
    assert pick_precision("auto", cpu, cpu_flags=[])[0] == "fp32"
    precision, why = pick_precision("auto", cpu, cpu_flags=["avx512_bf16"])
    assert precision == "bf16" and "avx512_bf16" in why  # the reason names what it found
    # a GPU: as torch says, natively (a V100 or T4 has no bf16)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert pick_precision("auto", torch.device("cuda"))[0] == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla V100-SXM2-16GB")
    precision, why = pick_precision("auto", torch.device("cuda"))
    assert precision == "fp32" and "Tesla V100-SXM2-16GB" in why
    assert pick_precision("fp32", torch.device("cuda"))[0] == "fp32"
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor : 0\nflags : fpu sse2 avx512f avx512_bf16 amx_tile amx_bf16\n")
    assert cpu_bf16_flags(cpuinfo) == ["amx_bf16", "avx512_bf16"]
    cpuinfo.write_text("processor : 0\nflags : fpu sse2 avx2 avx512f\n")
    assert cpu_bf16_flags(cpuinfo) == []


def test_the_default_loader_holds_the_data_on_a_gpu_and_uses_ffcv_on_a_cpu():
    assert pick_loader("auto", torch.device("cuda")) == "device"
    assert pick_loader("auto", torch.device("cpu")) == "ffcv"
    assert pick_loader("ffcv", torch.device("cuda")) == "ffcv"
