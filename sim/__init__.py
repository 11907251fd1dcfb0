"""sim: cocotb benches and runners for the generated Verilog (Verilator primary, Icarus second)."""
