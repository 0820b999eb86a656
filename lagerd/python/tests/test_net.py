"""Net, the supply and battery objects and the connection to lagerd, against
a stand-in lagerd on a real socket (tests/fakebox.py)."""

import contextlib
import io
import os
import socket
import sys
import tempfile
import threading
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import lager.daemon  # noqa: E402
from lager import (InstrumentError, InvalidNetError, LagerError, LimitError, Net,  # noqa: E402
                   NetType, RoleMismatchError)
from lager.daemon import Daemon  # noqa: E402
from tests.fakebox import FakeBox  # noqa: E402

SUPPLY = {"name": "supply1", "role": "power-supply", "instrument": "Keithley_2281S",
          "address": "TCPIP0::127.0.0.1::5025::SOCKET", "pin": 1}
BATTERY = dict(SUPPLY, name="battery1", role="battery")
RAIL = {"name": "rail", "role": "power-supply", "instrument": "Rigol_DP832",
        "address": "TCPIP0::127.0.0.1::5026::SOCKET", "pin": 2}


class WithBox(unittest.TestCase):
    def setUp(self):
        self.box = FakeBox()
        self.box.nets = [SUPPLY, BATTERY, RAIL]
        lager.daemon._shared = Daemon(self.box.url, token="")

    def tearDown(self):
        lager.daemon._shared._close()
        lager.daemon._shared = None
        self.box.close()

    def state(self, kind, state):
        self.box.replies[(kind, "state")] = (200, {"success": True, "message": "the state line",
                                                   "state": state})


class NetGetTest(WithBox):
    def test_get_returns_the_object_for_the_type(self):
        psu = Net.get("supply1", type=NetType.PowerSupply)
        self.assertEqual(type(psu).__name__, "SupplyNet")
        self.assertEqual((psu.name, psu.role, psu.address), ("supply1", "power-supply",
                                                              SUPPLY["address"]))
        self.assertEqual(type(Net.get("battery1", type=NetType.Battery)).__name__, "BatteryNet")
        self.assertEqual(type(Net.get("battery1")).__name__, "BatteryNet", "type from the role")
        self.assertEqual(type(Net.get("rail", type="PowerSupply")).__name__, "SupplyNet")
        for text in (str(psu), repr(psu)):
            for part in ("supply1", "power-supply", "Keithley_2281S", SUPPLY["address"]):
                self.assertIn(part, text)
        self.assertIn("channel 2", str(Net.get("rail")))

    def test_unknown_nets_list_the_saved_ones(self):
        with self.assertRaises(InvalidNetError) as caught:
            Net.get("nope", type=NetType.PowerSupply)
        self.assertEqual(str(caught.exception),
                         "Net 'nope' not found. Create it with 'lager nets add'. Saved nets: "
                         "supply1 (power-supply), battery1 (battery), rail (power-supply)")
        with self.assertRaises(InvalidNetError):
            Net.get("nope")

    def test_a_net_of_another_role_is_a_role_mismatch(self):
        with self.assertRaises(RoleMismatchError) as caught:
            Net.get("battery1", type=NetType.PowerSupply)
        self.assertEqual(str(caught.exception),
                         "Net 'battery1' is a 'battery' net, not 'power-supply'.")

    def test_types_this_box_does_not_drive_name_the_ones_it_does(self):
        for net_type in (NetType.GPIO, NetType.Analog):
            with self.assertRaises(NotImplementedError) as caught:
                Net.get("supply1", type=net_type)
            self.assertEqual(str(caught.exception),
                             "this box does not drive %s nets; it drives "
                             "NetType.PowerSupply, NetType.Battery, NetType.UART" % net_type)
        with self.assertRaises(TypeError):
            Net.get("supply1", type=42)

    def test_the_store_methods_go_to_lagerd(self):
        self.box.local = [RAIL]
        self.assertEqual(Net.list_saved(), [SUPPLY, BATTERY, RAIL])
        self.assertEqual(Net.get_local_nets(), [RAIL])
        self.assertTrue(Net.save_local_net(RAIL))
        self.assertTrue(Net.save_local_nets([RAIL]))
        self.box.replies[("nets", "delete")] = (404, {"success": False, "error": "no such net"})
        self.assertFalse(Net.delete_local_net("ghost", role=NetType.Battery))
        self.assertTrue(Net.delete_all_local_nets())
        self.assertTrue(Net.rename_local_net("rail", "vbus"))
        self.box.replies[("nets", "rename")] = (400, {"success": False, "error": "taken"})
        with self.assertRaises(LagerError) as caught:
            Net.rename_local_net("rail", "supply1")
        self.assertEqual(str(caught.exception), "taken")
        posted = [b for (m, p, b, _) in self.box.requests if p == "/nets"]
        self.assertEqual(posted[:3], [
            {"action": "save", "nets": [RAIL]},
            {"action": "replace", "nets": [RAIL]},
            {"action": "delete", "name": "ghost", "role": "battery"}])
        self.assertEqual(Net.filter_nets(Net.list_saved(), "rail", role="power-supply"), [RAIL])
        self.assertEqual(Net.filter_nets(Net.list_saved(), "rail", role=NetType.Battery), [])


class SupplyTest(WithBox):
    def test_methods_send_the_actions_and_return_their_types(self):
        psu = Net.get("supply1", type=NetType.PowerSupply)
        self.box.replies[("supply", "voltage")] = (200, {"success": True, "state": {"voltage": 5}})
        self.box.replies[("supply", "current")] = (200, {"success": True, "state": {"current": 0.01}})
        self.box.replies[("supply", "ovp")] = (200, {"success": True, "state": {"ovp_limit": 6.0}})
        self.box.replies[("supply", "ocp")] = (200, {"success": True, "state": {"ocp_limit": 1.5}})
        self.box.replies[("supply", "limits")] = (200, {"success": True, "state": {
            "voltage_max": 20.0, "current_max": 6.0}})
        self.state("supply", {"voltage": 5.0, "current": 0.5, "power": 2.5, "enabled": True,
                              "mode": "CC", "voltage_set": 5.0, "current_set": 0.5,
                              "voltage_max": 20.0, "current_max": 6.0, "ocp_limit": 6.1,
                              "ocp_tripped": False, "ovp_limit": None, "ovp_tripped": True,
                              "netname": "supply1", "channel": 1, "error": None})
        self.assertIsNone(psu.set_voltage(5))
        self.assertIsNone(psu.voltage(5))
        self.assertIsNone(psu.set_current(0.5))
        self.assertIsNone(psu.current(0.5))
        psu.set_ovp(6)
        psu.set_ocp(1.5)
        psu.clear_ovp()
        psu.clear_ocp()
        psu.set_mode()
        psu.enable()
        psu.disable()
        self.assertEqual(self.box.commands(), [
            ("/supply/command", "voltage", {"value": 5}),
            ("/supply/command", "voltage", {"value": 5}),
            ("/supply/command", "current", {"value": 0.5}),
            ("/supply/command", "current", {"value": 0.5}),
            ("/supply/command", "ovp", {"value": 6}),
            ("/supply/command", "ocp", {"value": 1.5}),
            ("/supply/command", "clear_ovp", {}),
            ("/supply/command", "clear_ocp", {}),
            ("/supply/command", "set_mode", {}),
            ("/supply/command", "enable", {}),
            ("/supply/command", "disable", {})])
        reads = [(psu.voltage(), 5.0), (psu.current(), 0.01), (psu.power(), 2.5),
                 (psu.get_ovp_limit(), 6.0), (psu.get_ocp_limit(), 1.5),
                 (psu.is_ovp(), True), (psu.is_ocp(), False), (psu.output_is_enabled(), True),
                 (psu.get_output_mode(), "CC"),
                 (psu.get_channel_limits(), {"voltage_max": 20.0, "current_max": 6.0})]
        for got, want in reads:
            self.assertEqual(got, want)
            self.assertIs(type(got), type(want))
        monitor = psu.get_monitor_state()
        self.assertEqual(len(monitor), 13)
        self.assertIsNone(monitor["ovp_limit"], "a failed field is None, never 0.0")
        self.assertIs(monitor["enabled"], True)
        self.assertEqual(psu.get_full_state()["netname"], "supply1")
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            self.assertIsNone(psu.state())
        self.assertEqual(out.getvalue(), "the state line\n")

    def test_failures_raise_with_lagerds_text(self):
        psu = Net.get("supply1", type=NetType.PowerSupply)
        self.box.replies[("supply", "voltage")] = (400, {
            "success": False, "error": "Voltage 25V is outside the instrument's range 0–20V"})
        with self.assertRaises(LimitError) as caught:
            psu.set_voltage(25)
        self.assertEqual(str(caught.exception), "Voltage 25V is outside the instrument's range 0–20V")
        self.box.replies[("supply", "enable")] = (502, {
            "success": False, "error": "[Errno 19] No such device: X is not there"})
        with self.assertRaises(InstrumentError) as caught:
            psu.enable()
        self.assertEqual(caught.exception.errno, 19)

    def test_setup_and_teardown_functions_run_around_the_output(self):
        calls = []
        psu = Net.get("supply1", type=NetType.PowerSupply,
                      setup_function=lambda net: calls.append(("setup", net.name)),
                      teardown_function=lambda net: calls.append(("teardown", net.name)))
        psu.enable()
        psu.disable()
        self.assertEqual(calls, [("setup", "supply1"), ("teardown", "supply1")])
        self.assertEqual([a for (_, a, _) in self.box.commands()], ["enable", "disable"])


class BatteryTest(WithBox):
    def test_getters_print_and_return_setters_set(self):
        bat = Net.get("battery1", type=NetType.Battery)
        self.state("battery", {"terminal_voltage": 3.9, "current": 0.1, "esr": 0.067, "soc": 75,
                               "voc": 3.9067, "enabled": True, "mode": "Dynamic", "model": "3",
                               "capacity": 2.0, "current_limit": 1.0, "ocp_limit": 6.1,
                               "ovp_limit": 21.0, "volt_full": 4.2, "volt_empty": 3.0,
                               "ocp_tripped": False, "ovp_tripped": False})
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            got = [bat.soc(), bat.voc(), bat.voltage_full(), bat.voltage_empty(),
                   bat.capacity(), bat.current_limit(), bat.ovp(), bat.ocp(), bat.mode(),
                   bat.model()]
        self.assertEqual(got, [75.0, 3.9067, 4.2, 3.0, 2.0, 1.0, 21.0, 6.1, "dynamic", "3"])
        self.assertIs(type(got[0]), float)
        self.assertEqual(out.getvalue().splitlines(), [
            "SOC: 75%", "VOC: 3.9067V", "Full voltage: 4.2V", "Empty voltage: 3V",
            "Capacity: 2Ah", "Current limit: 1A", "OVP: 21V", "OCP: 6.1A", "Mode: dynamic",
            "Model: 3"])
        self.assertEqual((bat.terminal_voltage(), bat.current(), bat.esr()), (3.9, 0.1, 0.067))
        state = bat.get_monitor_state()
        self.assertEqual(len(state), 16)
        self.assertIs(state["ovp_tripped"], False)
        self.box.requests.clear()
        for call in (lambda: bat.soc(80), lambda: bat.voc(3.7), lambda: bat.voltage_full(4.2),
                     lambda: bat.voltage_empty(3), lambda: bat.capacity(2.5),
                     lambda: bat.current_limit(1), lambda: bat.ovp(5), lambda: bat.ocp(2),
                     lambda: bat.mode("Static"), lambda: bat.model("NIMH1_2"),
                     bat.set_mode_battery, bat.enable, bat.disable, bat.clear, bat.clear_ovp,
                     bat.clear_ocp, lambda: bat.set_soc(1), lambda: bat.set_voc(1),
                     lambda: bat.set_volt_full(4), lambda: bat.set_volt_empty(3),
                     lambda: bat.set_capacity(1), lambda: bat.set_current_limit(1),
                     lambda: bat.set_ovp(1), lambda: bat.set_ocp(1),
                     lambda: bat.set_mode("dynamic"), lambda: bat.set_model(3),
                     bat.set_to_battery_mode, bat.enable_battery, bat.disable_battery):
            self.assertIsNone(call())
        self.assertEqual([(a, p) for (_, a, p) in self.box.commands()], [
            ("set_soc", {"value": 80}), ("set_voc", {"value": 3.7}),
            ("set_volt_full", {"value": 4.2}), ("set_volt_empty", {"value": 3}),
            ("set_capacity", {"value": 2.5}), ("set_current_limit", {"value": 1}),
            ("set_ovp", {"value": 5}), ("set_ocp", {"value": 2}),
            ("set_mode", {"value": "static"}), ("set_model", {"value": "NIMH1_2"}),
            ("set_to_battery_mode", {}), ("enable_battery", {}), ("disable_battery", {}),
            ("clear", {}), ("clear_ovp", {}), ("clear_ocp", {}),
            ("set_soc", {"value": 1}), ("set_voc", {"value": 1}),
            ("set_volt_full", {"value": 4}), ("set_volt_empty", {"value": 3}),
            ("set_capacity", {"value": 1}), ("set_current_limit", {"value": 1}),
            ("set_ovp", {"value": 1}), ("set_ocp", {"value": 1}),
            ("set_mode", {"value": "dynamic"}), ("set_model", {"value": 3}),
            ("set_to_battery_mode", {}), ("enable_battery", {}), ("disable_battery", {})])
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            bat.print_state()
            bat.state()
        self.assertEqual(out.getvalue(), "the state line\nthe state line\n")


class DaemonTest(unittest.TestCase):
    def test_one_connection_serves_many_calls_and_carries_the_token(self):
        box = FakeBox()
        self.addCleanup(box.close)
        with tempfile.NamedTemporaryFile("w", delete=False) as f:
            f.write("job-secret\n")
        self.addCleanup(os.unlink, f.name)
        os.environ["LAGER_JOB_TOKEN_FILE"] = f.name
        self.addCleanup(os.environ.pop, "LAGER_JOB_TOKEN_FILE")
        d = Daemon(box.url)
        for _ in range(50):
            self.assertEqual(d.get("/nets/list"), [])
        self.assertEqual(box.connections, 1)
        self.assertEqual(box.requests[0][3]["Authorization"], "Bearer job-secret")
        d._close()

    def test_an_idle_connection_closed_by_lagerd_is_replaced(self):
        # A server that answers one request per connection, then closes it
        # without saying so (as an idle timeout does).
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        self.addCleanup(listener.close)
        accepted = []

        def serve():
            while True:
                try:
                    conn, _ = listener.accept()
                except OSError:
                    return
                accepted.append(conn)
                conn.recv(65536)
                body = b'{"n": %d}' % len(accepted)
                conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                             + b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n")
                conn.close()

        threading.Thread(target=serve, daemon=True).start()
        d = Daemon("http://127.0.0.1:%d" % listener.getsockname()[1], token="")
        self.assertEqual(d.get("/x"), {"n": 1})
        self.assertEqual(d.get("/x"), {"n": 2}, "resent once on a fresh connection")
        d._close()

    def test_no_lagerd_is_a_clear_error(self):
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        listener.close()
        with self.assertRaises(LagerError) as caught:
            Daemon("http://127.0.0.1:%d" % port, token="").get("/nets/list")
        self.assertIn("cannot reach lagerd at http://127.0.0.1:%d" % port, str(caught.exception))
        self.assertIn("LAGER_DAEMON_URL", str(caught.exception))


if __name__ == "__main__":
    unittest.main()
