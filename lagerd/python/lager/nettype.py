"""NetType: the Python system's 24 kinds of net."""

import enum


class NetType(enum.Enum):
    Analog = 1
    Logic = 2
    Waveform = 3
    Battery = 4
    ELoad = 5
    PowerSupply = 6
    GPIO = 7
    ADC = 8
    Thermocouple = 9
    Rotation = 10
    Wifi = 11
    Actuate = 12
    PowerSupply2Q = 13
    DAC = 14
    Debug = 15
    Arm = 16
    Usb = 17
    WattMeter = 18
    UART = 19
    Webcam = 20
    SPI = 21
    I2C = 22
    EnergyAnalyzer = 23
    Router = 24

    @property
    def role(self):
        """The role a saved net of this type has (`power-supply`, ...)."""
        return _ROLES[self]

    @classmethod
    def from_role(cls, role):
        """The NetType of a saved net's role; ValueError for an unknown one."""
        key = str(role).strip().lower().replace("_", "-")
        for net_type, name in _ROLES.items():
            if name == key:
                return net_type
        if key in _ALIASES:
            return _ALIASES[key]
        raise ValueError(
            "unknown net role %r; known roles: %s" % (role, ", ".join(sorted(_ROLES.values())))
        )


_ROLES = {
    NetType.Analog: "scope",
    NetType.Logic: "logic",
    NetType.Waveform: "waveform",
    NetType.Battery: "battery",
    NetType.ELoad: "eload",
    NetType.PowerSupply: "power-supply",
    NetType.GPIO: "gpio",
    NetType.ADC: "adc",
    NetType.Thermocouple: "thermocouple",
    NetType.Rotation: "rotation",
    NetType.Wifi: "wifi",
    NetType.Actuate: "actuate",
    NetType.PowerSupply2Q: "power-supply-2q",
    NetType.DAC: "dac",
    NetType.Debug: "debug",
    NetType.Arm: "arm",
    NetType.Usb: "usb",
    NetType.WattMeter: "watt-meter",
    NetType.UART: "uart",
    NetType.Webcam: "webcam",
    NetType.SPI: "spi",
    NetType.I2C: "i2c",
    NetType.EnergyAnalyzer: "energy-analyzer",
    NetType.Router: "router",
}

# Other spellings seen in saved nets and on the CLI.
_ALIASES = {
    "supply": NetType.PowerSupply,
    "analog": NetType.Analog,
    "wattmeter": NetType.WattMeter,
    "energyanalyzer": NetType.EnergyAnalyzer,
    "power-supply2q": NetType.PowerSupply2Q,
}
