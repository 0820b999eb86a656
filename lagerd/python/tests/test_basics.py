"""NetType, the error classes, the action table, and what importing costs."""

import ast
import os
import subprocess
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
PACKAGE = os.path.join(os.path.dirname(HERE), "lager")
sys.path.insert(0, os.path.dirname(HERE))

from lager import (InstrumentError, InvalidNetError, LagerError, LimitError,  # noqa: E402
                   LockedError, NetType, RoleMismatchError)
from lager.errors import errno_of, from_reply  # noqa: E402


class NetTypeTest(unittest.TestCase):
    def test_the_24_members_of_the_python_system(self):
        names = [t.name for t in NetType]
        self.assertEqual(names, [
            "Analog", "Logic", "Waveform", "Battery", "ELoad", "PowerSupply", "GPIO",
            "ADC", "Thermocouple", "Rotation", "Wifi", "Actuate", "PowerSupply2Q", "DAC",
            "Debug", "Arm", "Usb", "WattMeter", "UART", "Webcam", "SPI", "I2C",
            "EnergyAnalyzer", "Router"])

    def test_from_role_maps_saved_roles_both_ways(self):
        self.assertIs(NetType.from_role("power-supply"), NetType.PowerSupply)
        self.assertIs(NetType.from_role("battery"), NetType.Battery)
        self.assertIs(NetType.from_role("uart"), NetType.UART)
        self.assertIs(NetType.from_role("Supply"), NetType.PowerSupply)
        self.assertIs(NetType.from_role("watt_meter"), NetType.WattMeter)
        for net_type in NetType:
            self.assertIs(NetType.from_role(net_type.role), net_type)
        with self.assertRaises(ValueError) as caught:
            NetType.from_role("toaster")
        self.assertIn("power-supply", str(caught.exception))


class ErrorsTest(unittest.TestCase):
    def test_lagerds_answers_become_the_documented_exceptions(self):
        cases = [
            (404, "Net 'x' not found. Create it with 'lager nets add'.", InvalidNetError),
            (400, "Net 'battery1' is a 'battery' net, not 'power-supply'.", RoleMismatchError),
            (400, "Voltage 25V is outside the instrument's range 0–20V", LimitError),
            (400, "Cannot set OVP (4V) below current voltage setpoint (5V). Lower voltage "
                  "first or use voltage command with both values.", LimitError),
            (400, "Unknown action: warp", LagerError),
            (423, "Box is locked by alice", LockedError),
            (502, "[Errno 16] Resource busy: TCPIP0::127.0.0.1::1::SOCKET is held", InstrumentError),
            (200, "'battery1' is on the same Keithley 2281S as 'supply1', which is currently "
                  "in use as a power-supply.", InstrumentError),
        ]
        for status, text, kind in cases:
            error = from_reply(status, {"success": False, "error": text})
            self.assertIs(type(error), kind, text)
            self.assertTrue(str(error).startswith(text), str(error))
            self.assertEqual(error.status, status)
        self.assertTrue(issubclass(LimitError, ValueError))
        for kind in (InvalidNetError, RoleMismatchError, InstrumentError, LimitError, LockedError):
            self.assertTrue(issubclass(kind, LagerError))

    def test_instrument_errors_carry_the_errno(self):
        for number, text in ((16, "Resource busy"), (19, "No such device"),
                             (110, "Operation timed out")):
            error = from_reply(502, {"error": "[Errno %d] %s: addr" % (number, text)})
            self.assertEqual(error.errno, number)
        self.assertIsNone(from_reply(502, {"error": "the instrument refused X"}).errno)
        self.assertIsNone(errno_of("[Errno x] nope"))
        self.assertEqual(str(from_reply(500, None)), "lagerd answered HTTP 500 without an error text")


class PackageTest(unittest.TestCase):
    def sources(self):
        for name in sorted(os.listdir(PACKAGE)):
            if name.endswith(".py"):
                with open(os.path.join(PACKAGE, name), encoding="utf-8") as f:
                    yield name, f.read()

    def test_every_module_parses_as_python_3_8(self):
        for name, source in self.sources():
            ast.parse(source, name, feature_version=(3, 8))

    def test_only_the_standard_library_is_imported(self):
        allowed = {"os", "socket", "threading", "enum", "json", "re", "time"}
        for name, source in self.sources():
            for node in ast.walk(ast.parse(source)):
                if isinstance(node, ast.Import):
                    modules = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0:
                    modules = [node.module]
                else:
                    continue
                for module in modules:
                    self.assertIn(module.split(".")[0], allowed, "%s imports %s" % (name, module))

    def test_importing_net_loads_no_http_or_json_machinery(self):
        code = ("import sys; from lager import Net; "
                "print(sorted(m for m in ('json', 'http.client', 'ssl', 'email', 're', 'socket', "
                "'threading', 'lager.daemon', 'lager.supply', 'lager.battery') "
                "if m in sys.modules))")
        out = subprocess.run([sys.executable, "-S", "-c", code], cwd=os.path.dirname(HERE),
                             capture_output=True, text=True, check=True).stdout
        self.assertEqual(out.strip(), "[]")

    def test_the_action_table_is_the_only_source_of_actions(self):
        from lager.actions import ACTIONS
        used = set()
        for name, source in self.sources():
            for node in ast.walk(ast.parse(source)):
                # self._call("action", ...) in the net classes
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                        and node.func.attr == "_call" and node.args
                        and isinstance(node.args[0], ast.Constant)):
                    kind = "battery" if name == "battery.py" else "supply"
                    self.assertIn(node.args[0].value, ACTIONS[kind], name)
                    used.add((kind, node.args[0].value))
        # _get_or_set passes its action through a variable: those too.
        from lager import battery
        for action in ("set_soc", "set_voc", "set_volt_full", "set_volt_empty",
                       "set_capacity", "set_current_limit", "set_ovp", "set_ocp"):
            self.assertIn(action, ACTIONS["battery"])
        self.assertTrue(battery.BatteryNet)
        self.assertGreaterEqual(len(used), 20)


if __name__ == "__main__":
    unittest.main()
