"""Chaos component: network faults between fleets and their targets, partitions, outages, fault proxies."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal, cast

from robot.api import logger
from robot.api.deco import keyword

from iotix._robot.component import LibraryComponent
from iotix._robot.convert import seconds
from iotix._robot.types import FaultProxy, NetworkFault
from iotix.fleet.network import DeviceSelection

Direction = Literal["upstream", "downstream", "both"]
OutageMode = Literal["refuse", "blackhole", "reset"]
MqttAction = Literal["drop", "delay", "disconnect"]


def _selection(
    devices: list[str] | None, count: int | None, percentage: float | None, seed: int | None
) -> DeviceSelection:
    return DeviceSelection(
        devices=tuple(devices) if devices is not None else None, count=count, percentage=percentage, seed=seed
    )


class NetworkFaultKeywords(LibraryComponent):
    """Network faults on fleets and on standalone fault proxies."""

    @property
    def network(self) -> Any:
        return self.simulator.network

    @keyword
    def add_network_fault(
        self,
        target: str,
        kind: str,
        direction: Direction = "both",
        devices: list[str] | None = None,
        count: int | None = None,
        percentage: float | None = None,
        seed: int | None = None,
        duration: timedelta | None = None,
        name: str | None = None,
        **settings: Any,
    ) -> str:
        """Adds a network fault of ``kind`` between the fleet (or fault proxy) ``target`` and what it talks to;
        returns the fault's name.

        The fault acts at once on open connections and on those opened later, until `Remove Network Fault`,
        `Clear Network Faults` or the end of ``duration``. ``direction``: ``upstream`` (device to target),
        ``downstream`` (target to device) or ``both``. On an MQTT or CoAP fleet it may act on chosen devices
        only: ``devices`` by id, or ``count`` / ``percentage`` of the fleet picked with ``seed`` (as `Drop Devices`
        picks); HTTP and Kafka fleets share pooled connections, so their faults act on the whole fleet.

        | =Kind= | =Settings= | =What the other side sees= |
        | latency | ``latency``, ``jitter``, ``distribution`` (uniform, normal), ``correlation`` | data arrives late |
        | bandwidth | ``rate`` (bits/s: ``64kbps``), ``shared`` | ``rate`` per connection (``shared=true``: in all) |
        | blackhole | none | nothing passes and nothing closes (TCP bytes are held and follow when it ends) |
        | limit_data | ``bytes`` | the connection closes after that many bytes |
        | reset | ``after`` (a duration) | an RST that long after the fault starts (TCP) |
        | slow_close | ``delay`` | a close (FIN) arrives that much later (TCP) |
        | timeout | ``timeout`` | nothing passes; the connection closes after ``timeout`` (0: never) (TCP) |
        | slicer | ``average_size``, ``size_variation``, ``delay`` | data in small pieces, ``delay`` apart (TCP) |
        | loss | ``probability``, or ``model=gilbert`` with ``p``, ``r``, ``loss_good``, ``loss_bad`` | lost (UDP) |
        | duplicate, corrupt | ``probability`` | datagrams twice / with a flipped bit (UDP) |
        | reorder | ``probability``, ``gap`` | datagrams overtaken by the next ``gap`` (UDP) |

        Common settings: ``toxicity`` (the share of connections the fault acts on, default 100%). TCP cannot lose
        bytes (it retransmits, which shows up as latency): for loss on an MQTT fleet use `Add MQTT Fault`.
        A bad kind or setting fails naming the fault and the target; faults already active stay as they are.

        | ${name} =    Add Network Fault    env    latency    latency=200ms    jitter=20ms    direction=upstream
        | Add Network Fault    sensors    loss    probability=20%    percentage=50    seed=7    duration=30s
        """
        if duration is not None:
            settings["duration"] = seconds(duration)
        settings["direction"] = direction
        added = self.call(
            self.network.add,
            target,
            kind,
            settings,
            _selection(devices, count, percentage, seed),
            fault_name=name,
        )
        logger.info(f"Network fault '{added}' ({kind}) added to '{target}'.")
        return cast(str, added)

    @keyword("Add MQTT Fault")
    def add_mqtt_fault(
        self,
        target: str,
        packet: str,
        action: MqttAction = "drop",
        probability: str = "100%",
        delay: timedelta | None = None,
        after: int = 1,
        direction: Direction = "both",
        devices: list[str] | None = None,
        count: int | None = None,
        percentage: float | None = None,
        seed: int | None = None,
        duration: timedelta | None = None,
        name: str | None = None,
    ) -> str:
        """Adds a fault on whole MQTT packets to an MQTT fleet (or a TCP fault proxy in front of a broker);
        returns its name.

        ``packet``: the packet types it acts on, one or several separated by commas: ``PUBLISH``, ``PUBACK``,
        ``PUBREC``, ``PUBREL``, ``PUBCOMP``, ``PINGREQ``, ``PINGRESP``, ``CONNECT``, ``CONNACK``, ``SUBSCRIBE``,
        ``SUBACK``, ``DISCONNECT``. ``action``: ``drop`` a share (``probability``) of them, ``delay`` them by
        ``delay``, or ``disconnect`` (close the connection, a FIN) at the ``after``-th one. Packets are whole: the
        stream stays valid MQTT, so this is loss that TCP cannot hide. On a fleet with TLS the fault acts on the
        MQTT packets inside TLS.

        | Add MQTT Fault    env    PUBLISH    drop    probability=10%    direction=upstream
        | Add MQTT Fault    env    PINGRESP    drop    devices=${ids}
        | Add MQTT Fault    env    PUBACK    delay    delay=2s
        """
        settings: dict[str, Any] = {
            "packet": packet,
            "action": action,
            "probability": probability,
            "after": after,
            "direction": direction,
        }
        if delay is not None:
            settings["delay"] = seconds(delay)
        if duration is not None:
            settings["duration"] = seconds(duration)
        added = self.call(
            self.network.add, target, "mqtt", settings, _selection(devices, count, percentage, seed), fault_name=name
        )
        logger.info(f"MQTT fault '{added}' ({action} {packet}) added to '{target}'.")
        return cast(str, added)

    @keyword
    def remove_network_fault(self, target: str, name: str) -> None:
        """Removes the network fault ``name`` from ``target``; bytes it held back go on at once."""
        self.call(self.network.remove, target, name)
        logger.info(f"Network fault '{name}' removed from '{target}'.")

    @keyword
    def clear_network_faults(self, target: str) -> int:
        """Removes every network fault of ``target``; returns how many there were. An outage stays until
        `Bring Target Up`."""
        n = cast(int, self.call(self.network.clear, target))
        logger.info(f"{n} network faults removed from '{target}'.")
        return n

    @keyword
    def get_network_faults(self, target: str, ended: bool = False) -> list[NetworkFault]:
        """The network faults of ``target`` with what each did so far; with ``ended`` also the faults that
        ended (removed, or their ``duration`` over; the last 50), oldest first, each with ``removed``.

        Each is a dictionary: ``name``, ``kind`` (``outage`` for `Take Target Down`, named ``target-down``),
        ``direction``, ``summary`` (in words: ``200 ms ± 20 ms (uniform)``), ``settings`` (seconds, bytes/s,
        shares 0..1, bytes), ``devices`` (how many, or ``all``), ``toxicity``, ``duration_s``, ``active_for_s``
        and the counters ``packets_delayed``, ``bytes_delayed``, ``packets_dropped``, ``bytes_dropped``,
        ``packets_duplicated``, ``packets_corrupted``, ``packets_reordered``, ``bytes_held``,
        ``connections_affected``, ``connections_reset``, ``connections_closed``, ``connections_refused``.

        | ${faults} =    Get Network Faults    env
        | Should Be True    ${faults}[0][packets_delayed] > 0
        """
        faults = cast(list[NetworkFault], self.call(self.network.describe, target))
        if ended:
            faults += cast(list[NetworkFault], self.call(self.network.history, target))
        return faults

    @keyword
    def partition_devices(
        self,
        fleet: str,
        count: int | None = None,
        percentage: float | None = None,
        devices: list[str] | None = None,
        seed: int | None = None,
        duration: timedelta | None = None,
    ) -> list[str]:
        """Cuts chosen devices of ``fleet`` off the network (nothing passes either way, nothing closes);
        returns their ids.

        Their connections stay open but silent, as across a real partition: the broker's keep-alive expires
        and publishes their last wills; the devices' own keep-alive gives up and they try to reconnect, which
        gets no answer until `Heal Partition` (or the end of ``duration``). The other devices go on as before.

        | ${cut} =    Partition Devices    env    percentage=30    seed=1
        | Heal Partition    env
        """
        ids = self.call(
            self.network.partition,
            fleet,
            _selection(devices, count, percentage, seed),
            seconds(duration) if duration is not None else None,
        )
        logger.info(
            f"Fleet '{fleet}': {len(ids)} devices partitioned: {', '.join(ids[:10])}{' ...' if len(ids) > 10 else ''}"
        )
        return cast(list[str], ids)

    @keyword
    def heal_partition(self, fleet: str) -> int:
        """Ends every partition of ``fleet`` (`Partition Devices`); returns how many there were."""
        n = cast(int, self.call(self.network.heal, fleet))
        logger.info(f"Fleet '{fleet}': {n} partitions healed.")
        return n

    @keyword
    def apply_network_profile(
        self,
        target: str,
        profile: str,
        devices: list[str] | None = None,
        count: int | None = None,
        percentage: float | None = None,
        seed: int | None = None,
        duration: timedelta | None = None,
    ) -> list[str]:
        """Puts ``target`` (or chosen devices) on a link like a named network: adds its latency, jitter,
        bandwidth (and, for UDP, loss) faults; returns their names.

        Profiles (figures and their sources in docs/network-faults.md): ``gprs``, ``edge``, ``3g``, ``4g``,
        ``5g``, ``lte-m``, ``nb-iot``, ``satellite``, ``flaky-wifi``, ``dsl``. On TCP the profile's loss is left
        out: TCP turns it into delay, which the latency figures already hold.

        | Apply Network Profile    env    3g
        """
        names = self.call(
            self.network.apply_profile,
            target,
            profile,
            _selection(devices, count, percentage, seed),
            duration=seconds(duration) if duration is not None else None,
        )
        logger.info(f"'{target}' on a {profile} link: faults {', '.join(names)}.")
        return cast(list[str], names)

    @keyword
    def take_target_down(self, target: str, duration: timedelta | None = None, mode: OutageMode = "refuse") -> None:
        """An outage of what ``target`` (a fleet or fault proxy) connects to, as its devices see it; it lasts
        ``duration`` or until `Bring Target Up`.

        - ``refuse``: open connections are reset and new ones refused, like a server process that is gone.
        - ``reset``: open connections are reset, new ones are reset at once.
        - ``blackhole``: nothing passes and nothing answers, like a host that is gone: connections hang until
          keep-alives and timeouts give up.

        Works for any target, not only the servers IoTix starts.

        | Take Target Down    env    duration=60s
        """
        self.call(self.network.take_down, target, mode, seconds(duration) if duration is not None else None)
        logger.info(f"Target of '{target}' down ({mode}){f' for {seconds(duration):g} s' if duration else ''}.")

    @keyword
    def bring_target_up(self, target: str) -> None:
        """Ends the outage of ``target`` (`Take Target Down`); devices reconnect with their backoff."""
        self.call(self.network.bring_up, target)
        logger.info(f"Target of '{target}' up again.")

    @keyword
    def start_network_fault_proxy(
        self,
        upstream: str,
        protocol: Literal["tcp", "udp"] = "tcp",
        name: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int | None = None,
    ) -> FaultProxy:
        """Starts a fault proxy in front of ``upstream`` (``host:port``) for links that are not fleets: a
        test client, or the system under test's own connection to its database or broker. Returns a dictionary
        with ``name``, ``host``, ``port``, ``protocol`` and ``upstream``: point the client at ``host:port`` and
        add faults to the proxy by its ``name`` like to a fleet. It listens on ``host`` (127.0.0.1 unless told)
        at ``port`` (0: a free port) and stops with the suite that started it.

        | ${proxy} =    Start Network Fault Proxy    upstream=127.0.0.1:5432    name=db
        | Add Network Fault    db    latency    latency=500ms
        """
        info = self.call(
            self.network.start_proxy,
            upstream,
            protocol=protocol,
            name=name,
            listen_host=host,
            listen_port=port,
            seed=seed,
        )
        self.context.own(f"network fault proxy '{info['name']}'", lambda: self.stop_network_fault_proxy(info["name"]))
        logger.info(
            f"Network fault proxy '{info['name']}' ({protocol}) on {info['host']}:{info['port']} "
            f"in front of {upstream}."
        )
        return cast(FaultProxy, info)

    @keyword
    def stop_network_fault_proxy(self, name: str) -> None:
        """Stops the fault proxy ``name``: its connections close."""
        self.call(self.network.stop_proxy, name)
        self.context.disown(f"network fault proxy '{name}'")
        logger.info(f"Network fault proxy '{name}' stopped.")
