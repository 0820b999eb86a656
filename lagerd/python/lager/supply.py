"""Power-supply nets (NetType.PowerSupply): a Keithley 2281S in its supply
role or one channel of a Rigol DP800, through lagerd's shared session."""

from .daemon import daemon
from .net import Net

# The keys of get_monitor_state (instruments.md section 6.1).
MONITOR_KEYS = (
    "voltage", "current", "power", "enabled", "mode", "voltage_set",
    "current_set", "voltage_max", "current_max", "ocp_limit", "ocp_tripped",
    "ovp_limit", "ovp_tripped",
)


class SupplyNet(Net):
    """A supply output. Readings are floats; a field the instrument could
    not give is None, never 0.0."""

    def _call(self, action, **params):
        return daemon().command("supply", self.name, action, params)

    def _read(self, action, key):
        return _float(self._call(action).get("state", {}).get(key))

    # Setting

    def set_voltage(self, value):
        """Sets the output voltage (V)."""
        self._call("voltage", value=value)

    def set_current(self, value):
        """Sets the current limit (A)."""
        self._call("current", value=value)

    def set_ovp(self, value):
        """Sets the over-voltage protection level (V)."""
        self._call("ovp", value=value)

    def set_ocp(self, value):
        """Sets the over-current protection level (A)."""
        self._call("ocp", value=value)

    def set_mode(self):
        """Puts the instrument in its power-supply function."""
        self._call("set_mode")

    def _enable(self):
        self._call("enable")

    def _disable(self):
        self._call("disable")

    def clear_ovp(self):
        """Clears an over-voltage trip."""
        self._call("clear_ovp")

    def clear_ocp(self):
        """Clears an over-current trip."""
        self._call("clear_ocp")

    # Reading

    def voltage(self, value=None):
        """Measured volts (the setpoint while the output is off); with a
        value, sets the voltage instead."""
        if value is not None:
            return self.set_voltage(value)
        return self._read("voltage", "voltage")

    def current(self, value=None):
        """Measured amps (the limit while the output is off); with a value,
        sets the current limit instead."""
        if value is not None:
            return self.set_current(value)
        return self._read("current", "current")

    def power(self):
        """Measured watts: volts times amps."""
        return _float(self.get_full_state().get("power"))

    def get_ovp_limit(self):
        return self._read("ovp", "ovp_limit")

    def get_ocp_limit(self):
        return self._read("ocp", "ocp_limit")

    def is_ovp(self):
        """Whether over-voltage protection has tripped."""
        return self.get_full_state().get("ovp_tripped") is True

    def is_ocp(self):
        """Whether over-current protection has tripped."""
        return self.get_full_state().get("ocp_tripped") is True

    def output_is_enabled(self, channel=None):
        return self.get_full_state().get("enabled") is True

    def get_output_mode(self, channel=None):
        """"CV" or "CC"."""
        return self.get_full_state().get("mode")

    def get_channel_limits(self, channel=None):
        """{"voltage_max", "current_max"}: the model's (or channel's) ceilings."""
        state = self._call("limits").get("state", {})
        return {"voltage_max": _float(state.get("voltage_max")),
                "current_max": _float(state.get("current_max"))}

    def get_full_state(self):
        """Everything lagerd reports for the output, as a dict."""
        return self._call("state").get("state", {})

    def get_monitor_state(self, channel=None):
        """The 13 monitor keys (instruments.md section 6.1)."""
        state = self.get_full_state()
        flags = ("enabled", "ocp_tripped", "ovp_tripped")
        return {key: (state.get(key) is True if key in flags
                      else state.get(key) if key == "mode"
                      else _float(state.get(key)))
                for key in MONITOR_KEYS}

    def state(self):
        """Prints the state line, as `lager supply NET state` does."""
        print(self._call("state").get("message", ""))


def _float(value):
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
