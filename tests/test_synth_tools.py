"""The yowasp flow's own pieces: port parsing, the iCE40 IO shim, a real synthesis run."""

import pytest

from deltanet.synth import DoesNotFit, SynthError, io_shim, pnr_misfit, ports, synth

COUNTER = """module deltanet_core(clk, rst, start, done, q);
  input clk; wire clk;
  input rst; wire rst;
  input start; wire start;
  output done; reg done;
  output [7:0] q; reg [7:0] q;
  always @(posedge clk) begin
    if (rst) begin q <= 0; done <= 0; end
    else begin done <= 0; if (start) q <= 0; else if (q != 8'hff) begin q <= q + 1;
      if (q == 10) done <= 1; end end
  end
endmodule
"""


def test_ports_and_shim():
    assert ports(COUNTER) == [("input", "clk", 1), ("input", "rst", 1), ("input", "start", 1),
                              ("output", "done", 1), ("output", "q", 8)]
    shim, ffs = io_shim(COUNTER)
    assert "module deltanet_core_shim(input clk, input sin, input ld, output sout);" in shim
    assert ".q(ov[8:1])" in shim and ".start(ish[0:0])" in shim
    assert ffs == 1 + 9 + 1
    with pytest.raises(SynthError, match="not found"):
        ports("module other(); endmodule")


def test_synth_ecp5_and_cache(tmp_path):
    v = tmp_path / "top.v"
    v.write_text(COUNTER)
    res = synth(v, "ecp5-25k", cache_root=tmp_path / "cache")
    assert res["ffs"] >= 9 and res["luts"] > 0 and res["fmax_mhz"] > 50
    assert res["luts_available"] == 24288
    again = synth(v, "ecp5-25k", cache_root=tmp_path / "cache")
    assert again["cached"] and again["luts"] == res["luts"]
    with pytest.raises(ValueError, match="--target"):
        synth(v, "virtex")


def test_synth_counts_and_early_does_not_fit(tmp_path):
    from deltanet.synth import synth_counts
    stat = tmp_path / "stat.txt"
    stat.write_text("=== top ===\n   37518 cells\n     6649   CCU2C\n        4   DP16KD\n"
                    "    17365   LUT4\n        4   MULT18X18D\n    10582   TRELLIS_FF\n")
    assert synth_counts(stat, "ecp5") == {"luts": 17365 + 2 * 6649, "ffs": 10582, "dsp": 4,
                                          "bram": 4}
    # a real design too big for the iCE40: yosys counts it, nextpnr is never started
    wide = "\n".join(f"  output [31:0] q{i}; reg [31:0] q{i};" for i in range(8))
    body = "\n".join(f"  always @(posedge clk) q{i} <= q{i} * a + {i};" for i in range(8))
    v = tmp_path / "big.v"
    v.write_text("module deltanet_core(clk, rst, a, " + ", ".join(f"q{i}" for i in range(8))
                 + ");\n  input clk; wire clk;\n  input rst; wire rst;\n"
                 "  input [31:0] a; wire [31:0] a;\n" + wide + "\n" + body + "\nendmodule\n")
    with pytest.raises(SynthError, match="does not fit ice40-up5k") as e:
        synth(v, "ice40-up5k", cache_root=tmp_path / "c")
    # the record `deltanet synth --json` writes: fits false, the reason, the counts
    assert isinstance(e.value, DoesNotFit)
    r = e.value.result
    assert r["fits"] is False and r["target"] == "ice40-up5k" and "needs" in r["reason"]
    assert r["needs"] and r["capacity"] and not r["cached"]
    with pytest.raises(SynthError, match="does not fit") as e:  # cached verdict, same message
        synth(v, "ice40-up5k", cache_root=tmp_path / "c")
    assert isinstance(e.value, DoesNotFit) and e.value.result["cached"]
    assert e.value.result["reason"] == r["reason"]


def test_synth_another_top_name(tmp_path):
    v = tmp_path / "top.v"
    v.write_text(COUNTER.replace("module deltanet_core(", "module my_top("))
    res = synth(v, "ecp5-25k", cache_root=tmp_path / "cache", top_name="my_top")
    assert res["top"] == "my_top" and res["ffs"] >= 9
    shim, _ = io_shim(v.read_text(), "my_top")
    assert "module my_top_shim(" in shim


def test_ice40_memories_tiny_to_logic_others_to_block():
    from deltanet.synth import ice40_memories

    v = ('  (* ram_style = "distributed" *)\n  reg [0:0] dirty [16:0];\n'
         '  (* ram_style = "distributed" *)\n  reg [30:0] acc [16:0];\n'
         '  (* ram_style = "block" *)\n  reg [14:0] w [99:0];\n')
    out = ice40_memories(v)
    assert 'distributed' not in out
    assert '(* ram_style = "logic" *)\n  reg [0:0] dirty [16:0];' in out
    assert '(* ram_style = "block" *)\n  reg [30:0] acc [16:0];' in out
    assert out.count('ram_style = "block"') == 2


def test_pnr_misfit_names_what_ran_out():
    # nextpnr-ice40's placer, out of logic cells (seen with 5,518 of 5,280)
    text = ("Warning: No PCF file specified; IO pins will be placed automatically\n"
            "ERROR: Failed to expand region (0, 0) |_> (25, 31) of 5518 ICESTORM_LCs\n")
    assert pnr_misfit(text, "ice40-up5k") == ("luts: placement needs 5518 logic cells, "
                                              "ice40-up5k has 5280")
    assert pnr_misfit("Info: Device utilisation: ok\nERROR: Unable to place cell 'x'",
                      "ecp5-25k") == "Unable to place cell 'x'"
    assert pnr_misfit("ERROR: Max frequency for clock: timing failed", "ecp5-25k") is None
