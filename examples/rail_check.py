from lager import Net, NetType

psu = Net.get("supply1", type=NetType.PowerSupply)
psu.set_voltage(3.3)
psu.set_current(0.5)
psu.enable()
volts = psu.voltage()
assert abs(volts - 3.3) < 0.066, f"rail at {volts} V, not 3.3 V"
print(f"rail OK: {volts} V, {psu.current()} A, {psu.get_output_mode()}")
psu.disable()
