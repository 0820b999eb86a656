"""Battery-simulator nets (NetType.Battery): a Keithley 2281S in its battery
role, through lagerd's shared session. Getters called without a value print
it (as the CLI would) and return it; with a value they set it."""

from .daemon import daemon
from .net import Net

# The keys of get_monitor_state (instruments.md section 6.2).
MONITOR_KEYS = (
    "terminal_voltage", "current", "esr", "soc", "voc", "enabled", "mode",
    "model", "capacity", "current_limit", "ocp_limit", "ovp_limit",
    "volt_full", "volt_empty", "ocp_tripped", "ovp_tripped",
)
_FLAGS = ("enabled", "ocp_tripped", "ovp_tripped")
_TEXT = ("mode", "model")


class BatteryNet(Net):
    """A simulated battery."""

    def _call(self, action, **params):
        return daemon().command("battery", self.name, action, params)

    def get_monitor_state(self):
        """The battery's state: numbers as float, flags as bool."""
        state = self._call("state").get("state", {})
        return {key: (state.get(key) is True if key in _FLAGS
                      else state.get(key) if key in _TEXT
                      else _float(state.get(key)))
                for key in MONITOR_KEYS}

    def _get_or_set(self, value, action, key, label, unit):
        if value is not None:
            self._call(action, value=value)
            return None
        reading = self.get_monitor_state()[key]
        print("%s: %s%s" % (label, _show(reading), unit))
        return reading

    # Getters and setters in one (the Net API)

    def soc(self, value=None):
        """State of charge, percent."""
        return self._get_or_set(value, "set_soc", "soc", "SOC", "%")

    def voc(self, value=None):
        """Open-circuit voltage, V."""
        return self._get_or_set(value, "set_voc", "voc", "VOC", "V")

    def voltage_full(self, value=None):
        """Open-circuit voltage at 100 % charge, V."""
        return self._get_or_set(value, "set_volt_full", "volt_full", "Full voltage", "V")

    def voltage_empty(self, value=None):
        """Open-circuit voltage at 0 % charge, V."""
        return self._get_or_set(value, "set_volt_empty", "volt_empty", "Empty voltage", "V")

    def capacity(self, value=None):
        """Capacity, Ah."""
        return self._get_or_set(value, "set_capacity", "capacity", "Capacity", "Ah")

    def current_limit(self, value=None):
        """Current limit, A."""
        return self._get_or_set(value, "set_current_limit", "current_limit", "Current limit", "A")

    def ovp(self, value=None):
        """Over-voltage protection level, V."""
        return self._get_or_set(value, "set_ovp", "ovp_limit", "OVP", "V")

    def ocp(self, value=None):
        """Over-current protection level, A."""
        return self._get_or_set(value, "set_ocp", "ocp_limit", "OCP", "A")

    def mode(self, mode_type=None):
        """'static' or 'dynamic' (the charge follows the current drawn)."""
        if mode_type is not None:
            self.set_mode(mode_type)
            return None
        mode = self.get_monitor_state()["mode"]
        mode = mode.lower() if isinstance(mode, str) else mode
        print("Mode: %s" % _show(mode))
        return mode

    def model(self, partnumber=None):
        """The battery model: a slot 1-9 or a built-in name."""
        if partnumber is not None:
            self.set_model(partnumber)
            return None
        model = self.get_monitor_state()["model"]
        print("Model: %s" % _show(model))
        return model

    def set_mode_battery(self):
        """Enters the battery-simulator function, output off, trips cleared."""
        self._call("set_to_battery_mode")

    def _enable(self):
        self._call("enable_battery")

    def _disable(self):
        self._call("disable_battery")

    def clear(self):
        """Clears every protection trip."""
        self._call("clear")

    def clear_ovp(self):
        self._call("clear_ovp")

    def clear_ocp(self):
        self._call("clear_ocp")

    def print_state(self):
        """Prints the battery's state line."""
        print(self._call("state").get("message", ""))

    state = print_state

    def terminal_voltage(self):
        """Volts at the terminals: VOC minus current times ESR."""
        return self.get_monitor_state()["terminal_voltage"]

    def current(self):
        """Amps drawn from the simulated battery."""
        return self.get_monitor_state()["current"]

    def esr(self):
        """Equivalent series resistance, ohms."""
        return self.get_monitor_state()["esr"]

    # The driver-level names real scripts call too

    def set_soc(self, value):
        self._call("set_soc", value=value)

    def set_voc(self, value):
        self._call("set_voc", value=value)

    def set_volt_full(self, value):
        self._call("set_volt_full", value=value)

    def set_volt_empty(self, value):
        self._call("set_volt_empty", value=value)

    def set_capacity(self, value):
        self._call("set_capacity", value=value)

    def set_current_limit(self, value):
        self._call("set_current_limit", value=value)

    def set_ovp(self, value):
        self._call("set_ovp", value=value)

    def set_ocp(self, value):
        self._call("set_ocp", value=value)

    def set_mode(self, mode):
        self._call("set_mode", value=str(mode).lower())

    def set_model(self, partnumber):
        self._call("set_model", value=partnumber)

    def set_to_battery_mode(self):
        self.set_mode_battery()

    def enable_battery(self):
        self.enable()

    def disable_battery(self):
        self.disable()


def _float(value):
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _show(value):
    return "n/a" if value is None else "%g" % value if isinstance(value, float) else value
