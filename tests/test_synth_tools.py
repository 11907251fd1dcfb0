"""The yowasp flow's own pieces: port parsing, the iCE40 IO shim, a real synthesis run."""

import pytest

from deltanet.synth import SynthError, io_shim, ports, synth

COUNTER = """module deltanet_top(clk, rst, start, done, q);
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
    assert "module deltanet_top_shim(input clk, input sin, input ld, output sout);" in shim
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
