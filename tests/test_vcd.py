"""sim.vcd.filter_vcd: scope and time window of a waveform, values right from the first stamp."""

from deltanet.sim.vcd import filter_vcd, timescale_s

VCD = """$timescale 1 ps $end
$scope module top $end
$var wire 1 ! clk $end
$scope module lane0 $end
$var wire 4 " acc [3:0] $end
$upscope $end
$scope module lane1 $end
$var wire 1 # hit $end
$upscope $end
$upscope $end
$enddefinitions $end
#0
$dumpvars
0!
b0000 "
0#
$end
#10
1!
b0011 "
#20
0!
1#
#30
1!
b0101 "
#40
0!
0#
"""


def test_scope_and_window(tmp_path):
    src = tmp_path / "w.vcd"
    src.write_text(VCD)
    assert timescale_s(VCD) == 1e-12
    out = tmp_path / "cut.vcd"
    r = filter_vcd(src, out, scope="top.lane0", start=15, stop=30)
    assert r == {"vars": 1, "of": 3, "start": 15, "stop": 30}
    text = out.read_text()
    assert "acc" in text and "clk" not in text and "hit" not in text
    body = text.split("$enddefinitions $end\n", 1)[1].split()
    # the window opens with the value at its start, then the changes up to its end
    assert body == ["#15", "$dumpvars", "b0011", '"', "$end", "#20", "#30", "b0101", '"']


def test_no_window_keeps_every_time_and_filters_in_place(tmp_path):
    src = tmp_path / "w.vcd"
    src.write_text(VCD)
    r = filter_vcd(src, src, scope="top.lane1")
    text = src.read_text()
    assert r["vars"] == 1 and "hit" in text and "acc" not in text
    assert "$dumpvars\n0#\n$end" in text and "#40\n0#" in text
    assert not list(tmp_path.glob(".*tmp"))


def test_simulate_waves_scope_and_cycles(tmp_path, capsys):
    from deltanet import bundled_model
    from deltanet.cli import main

    vcd = tmp_path / "w.vcd"
    rc = main(["--quiet", "simulate", "--engine", "amaranth", "--model",
               str(bundled_model("cartpole")), "--max-steps", "3", "--waves", str(vcd),
               "--waves-scope", "bench.top.lane0", "--waves-from", "5", "--waves-to", "40"])
    assert rc == 0
    assert "waves cut to" in capsys.readouterr().out
    text = vcd.read_text()
    stamps = [int(line[1:]) for line in text.splitlines() if line.startswith("#")]
    fs_per_cycle = 10_000_000  # 10 ns clock, VCD in fs
    assert stamps[0] == 5 * fs_per_cycle and stamps[-1] <= 40 * fs_per_cycle
    assert "$scope module lane0 $end" in text and "exam1" not in text.split("$var")[-1]
    assert main(["simulate", "--engine", "amaranth", "--model", str(bundled_model("cartpole")),
                 "--waves-from", "5"]) == 2  # needs --waves
