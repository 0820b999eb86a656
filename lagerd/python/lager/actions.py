"""Every lagerd instrument action this package sends, in one place, so a
test can hold them against lagerd's own action table."""

ACTIONS = {
    # POST /supply/command
    "supply": frozenset({
        "voltage", "current", "enable", "disable", "ovp", "ocp",
        "clear_ovp", "clear_ocp", "state", "set_mode", "limits",
    }),
    # POST /battery/command
    "battery": frozenset({
        "set_soc", "set_voc", "set_volt_full", "set_volt_empty",
        "set_capacity", "set_current_limit", "set_ovp", "set_ocp",
        "set_mode", "set_model", "enable_battery", "disable_battery",
        "set_to_battery_mode", "clear", "clear_ovp", "clear_ocp", "state",
    }),
}
