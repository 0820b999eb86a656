"""Net: a box's named connection to an instrument, and the box's net store
(the same store as `lager nets`, kept by lagerd)."""

from .errors import InvalidNetError, LagerError, RoleMismatchError
from .nettype import NetType


def daemon():
    # The connection module (socket, threading) loads on the first call,
    # not on `from lager import Net`.
    from .daemon import daemon as shared
    return shared()


# NetType -> (module, class) of the object Net.get returns. The one place a
# new kind of net is added; modules load on first use.
KINDS = {
    NetType.PowerSupply: ("lager.supply", "SupplyNet"),
    NetType.Battery: ("lager.battery", "BatteryNet"),
    NetType.UART: ("lager.uart", "UartNet"),
}


class Net:
    """A net: a name on the box, its role, instrument, address and channel."""

    def __init__(self, name, type, record, setup_function=None, teardown_function=None):
        self.name = name
        self.type = type
        self.role = record.get("role")
        self.instrument = record.get("instrument")
        self.address = record.get("address")
        self.pin = record.get("pin")
        self.setup_function = setup_function
        self.teardown_function = teardown_function

    @classmethod
    def get(cls, name, type=None, *, setup_function=None, teardown_function=None):
        """The object for net `name` of `type` (default: the saved net's own
        role). Raises InvalidNetError, RoleMismatchError, or
        NotImplementedError for a type this box does not drive."""
        nets = cls.list_saved()
        named = cls.filter_nets(nets, name)
        if type is None:
            if not named:
                raise InvalidNetError(_not_found(name, nets))
            type = NetType.from_role(named[0].get("role"))
        if isinstance(type, str):
            type = NetType[type] if type in NetType.__members__ else NetType.from_role(type)
        if not isinstance(type, NetType):
            raise TypeError("type must be a NetType, e.g. NetType.PowerSupply, not %r" % (type,))
        kind = KINDS.get(type)
        if kind is None:
            raise NotImplementedError(
                "this box does not drive %s nets; it drives %s"
                % (type, ", ".join(str(t) for t in KINDS)))
        if not named:
            raise InvalidNetError(_not_found(name, nets))
        record = next((n for n in named if n.get("role") == type.role), None)
        if record is None:
            raise RoleMismatchError("Net '%s' is a '%s' net, not '%s'."
                                    % (name, named[0].get("role"), type.role))
        module = __import__(kind[0], fromlist=[kind[1]])
        return getattr(module, kind[1])(name, type, record, setup_function, teardown_function)

    def enable(self):
        """Runs setup_function(net) if given, then turns the output on."""
        if self.setup_function is not None:
            self.setup_function(self)
        self._enable()

    def disable(self):
        """Turns the output off, then runs teardown_function(net) if given."""
        self._disable()
        if self.teardown_function is not None:
            self.teardown_function(self)

    def _enable(self):
        raise NotImplementedError("%s nets cannot be enabled" % self.type)

    def _disable(self):
        raise NotImplementedError("%s nets cannot be disabled" % self.type)

    def __str__(self):
        channel = "" if self.pin in (None, 1) else " channel %s" % self.pin
        return "%s net '%s' (%s%s at %s)" % (
            self.role, self.name, self.instrument, channel, self.address)

    def __repr__(self):
        return "<%s name=%r role=%r instrument=%r address=%r pin=%r>" % (
            type(self).__name__, self.name, self.role, self.instrument, self.address, self.pin)

    # The box's net store: every call goes to lagerd, which owns the file.

    @staticmethod
    def list_saved():
        """Every net the box serves, as dicts (name, role, instrument,
        address, pin)."""
        nets = daemon().get("/nets/list")
        return nets.get("nets", []) if isinstance(nets, dict) else nets

    @staticmethod
    def get_local_nets():
        """The nets saved in the box's store (without the simulated ones
        `lagerd --sim` adds)."""
        return daemon().get("/nets/list?local=1")

    @staticmethod
    def save_local_net(data):
        """Adds a net, or replaces the saved net of the same name."""
        return _change({"action": "save", "nets": [data]})

    @staticmethod
    def save_local_nets(nets):
        """Makes `nets` the whole saved list (every entry validated first;
        nothing changes if one is refused)."""
        return _change({"action": "replace", "nets": list(nets)})

    @staticmethod
    def delete_local_net(name, role=None):
        """Deletes the saved net `name` (only if it has `role`, when given);
        False if there is none."""
        body = {"action": "delete", "name": name}
        if role is not None:
            body["role"] = role.role if isinstance(role, NetType) else role
        return _change(body, missing_ok=True)

    @staticmethod
    def delete_all_local_nets():
        """Deletes every saved net."""
        return _change({"action": "delete_all"})

    @staticmethod
    def rename_local_net(old_name, new_name):
        """Renames a saved net; False if there is none called old_name."""
        return _change({"action": "rename", "name": old_name, "new_name": new_name},
                       missing_ok=True)

    @staticmethod
    def filter_nets(all_nets, name, role=None):
        """The nets of all_nets called `name` (with `role`, when given)."""
        if isinstance(role, NetType):
            role = role.role
        return [n for n in all_nets
                if n.get("name") == name and (role is None or n.get("role") == role)]


def _change(body, missing_ok=False):
    status, reply = daemon().request("POST", "/nets", body)
    if status == 200:
        return True
    if status == 404 and missing_ok:
        return False
    error = reply.get("error") if isinstance(reply, dict) else None
    raise LagerError(error or "lagerd refused the net change (HTTP %d)" % status, status)


def _not_found(name, nets):
    saved = ", ".join("%s (%s)" % (n.get("name"), n.get("role")) for n in nets) or "none"
    return "Net '%s' not found. Create it with 'lager nets add'. Saved nets: %s" % (name, saved)
