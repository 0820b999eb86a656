"""The on-box `lager` package: drive a box's instruments by net name.

    from lager import Net, NetType
    psu = Net.get("supply1", type=NetType.PowerSupply)
    psu.set_voltage(3.3)
    psu.enable()
    print(psu.voltage())

Every call goes through lagerd, which owns the one session per instrument
that scripts, the CLI and monitors share. Shipped inside lagerd; pure
standard library, Python 3.8 or newer.
"""

from .errors import (InstrumentError, InvalidNetError, LagerError, LimitError,
                     LockedError, RoleMismatchError)
from .net import Net
from .nettype import NetType

__all__ = [
    "Net", "NetType", "LagerError", "InvalidNetError", "RoleMismatchError",
    "InstrumentError", "LimitError", "LockedError",
]
